// The shared recorder of the SDK scripts: every call's outcome, and the TypeScript type its
// data must satisfy, printed as one JSON document on stdout for tests/sdk/typecheck.py.
export const results = [];

// `call` runs one SDK method. `type` is a TypeScript type expression for the data on success;
// `unwrap` turns the SDK's answer into {data, error} (each SDK reports errors its own way).
export async function call(name, type, fn, unwrap) {
  try {
    const answer = await fn();
    const { data, error } = unwrap(answer);
    results.push({ name, type, data: data ?? null, error: error ?? null });
    return error ? null : data;
  } catch (exception) {
    results.push({ name, type, data: null, error: { name: "exception", message: String(exception) } });
    return null;
  }
}

export function print() {
  process.stdout.write(JSON.stringify(results));
}
