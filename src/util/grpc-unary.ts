/** A grpc-js unary call as a promise with a deadline (no grpc import: per-pod code loads grpc lazily). */
export function unary<T>(client: Record<string, Function>, method: string, request: object, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method]!.call(client, request, { deadline: Date.now() + timeoutMs }, (err: Error | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}
