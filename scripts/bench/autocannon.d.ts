// The part of autocannon's API the API benchmark uses (autocannon ships no types).
declare module 'autocannon' {
  interface Histogram {
    average: number
    total: number
    p50: number
    p99: number
  }
  interface Result {
    requests: Histogram
    latency: Histogram
    non2xx: number
  }
  interface Options {
    url: string
    connections: number
    duration: number
    requests: Record<string, unknown>[]
  }
  export default function autocannon(options: Options): Promise<Result>
}
