/**
 * The key the per-host limit counts calls by: host:port, with the scheme's default port filled in.
 * A free target's delivery keeps it (deliveries.target_host), so a claim can leave out a full host's:
 * a change to what it returns needs the pending deliveries' target_host written again.
 */
export function hostKey(webhookUrl: string): string | undefined {
  try {
    const url = new URL(webhookUrl)
    return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`
  } catch {
    return undefined
  }
}
