// The Admin API's HTTP/JSON face (POST /api/v1/<Method>, protobuf JSON mapping) and the token.
// The token lives in sessionStorage only: sent as `Authorization: Bearer`, never as a cookie,
// so there is no ambient credential a cross-site request could use.
const TOKEN_KEY = 'pimgate.console.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}
export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// An error answered by the API: `code` is the gRPC code name ("NOT_FOUND"), `status` the HTTP one.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// Listeners told when the API refuses the token (HTTP 401): the app goes back to the login page.
const unauthorizedListeners = new Set();
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

// Calls one Admin RPC. `request` uses the proto field names; the answer is the response message
// in protobuf JSON (64-bit integers as strings, default values possibly left out: read it with
// num()/get()). `tokenOverride` checks a token before it is kept (the login page).
export async function call(method, request = {}, tokenOverride) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  const t = tokenOverride !== undefined ? tokenOverride : token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let response;
  try {
    response = await fetch(`/api/v1/${method}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(request),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'UNAVAILABLE', `pimgate cannot be reached (${e.message})`);
  }
  const text = await response.text();
  let body = {};
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { message: text };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body.code, body.message);
    if (response.status === 401 && tokenOverride === undefined) {
      for (const listener of unauthorizedListeners) listener(error);
    }
    throw error;
  }
  return body;
}

// A field of a protobuf JSON object by its proto name ("head_sequence"), whether the server
// printed proto names or lowerCamelCase JSON names.
export function get(object, name, fallback = undefined) {
  if (!object) return fallback;
  if (name in object) return object[name];
  const camel = name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
  if (camel in object) return object[camel];
  return fallback;
}

// A number field (uint64 comes as a decimal string); 0 when left out as a default.
export function num(object, name) {
  const value = get(object, name, 0);
  const n = typeof value === 'number' ? value : Number(value);
  return Number.isFinite(n) ? n : 0;
}

export function list(object, name) {
  const value = get(object, name, []);
  return Array.isArray(value) ? value : [];
}

export function str(object, name) {
  const value = get(object, name, '');
  return value === null || value === undefined ? '' : String(value);
}
