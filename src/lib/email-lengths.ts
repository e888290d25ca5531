/**
 * Whether an e-mail address fits what SMTP carries (RFC 5321 4.5.3.1): 254 characters in all, 64 before
 * the @, 63 in each label of the domain. A mail server refuses a longer one, and its mails would be retried for ever.
 */
export function withinSmtpLengths(address: string): boolean {
  const at = address.lastIndexOf('@')
  return address.length <= 254 && at <= 64 && address.slice(at + 1).split('.').every((label) => label.length <= 63)
}
