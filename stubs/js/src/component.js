//! Turning the stub's component bytes into a running instance: the WIT version check, the
//! transpilation by jco (`@bytecodealliance/jco-transpile`, in the browser and in Node.js),
//! and the instantiation with the host's imports plus sandboxed WASI shims
//! (`@bytecodealliance/preview2-shim`: no preopened directory, no environment, no network).

import { $init, generate } from '@bytecodealliance/jco-transpile/component';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';

/** The WIT package this runtime implements. */
export const WIT_PACKAGE = 'rethink:stub';
/** The package versions this runtime knows. */
export const KNOWN_VERSIONS = ['0.1.0'];

/** The component cannot be run by this runtime (unknown version, not a component, ...). */
export class ComponentLoadError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ComponentLoadError';
  }
}

/**
 * The `rethink:stub` interfaces a component imports, with their versions, read from the names
 * in its import section (`rethink:stub/bus@0.1.0`, ...). Throws when it imports a version this
 * runtime does not know, or none at all.
 */
export function witVersions(bytes) {
  const text = new TextDecoder('latin1').decode(bytes);
  const found = new Map();
  for (const m of text.matchAll(/rethink:stub\/([a-z][a-z0-9-]*)@([0-9]+\.[0-9]+\.[0-9]+)/g)) {
    found.set(m[1], m[2]);
  }
  if (found.size === 0) {
    throw new ComponentLoadError(`the component imports no ${WIT_PACKAGE} interface: not a protocol stub`);
  }
  for (const [iface, version] of found) {
    if (!KNOWN_VERSIONS.includes(version)) {
      throw new ComponentLoadError(
        `the component was built against ${WIT_PACKAGE}/${iface}@${version}; this runtime knows ${KNOWN_VERSIONS.join(', ')}`,
      );
    }
  }
  return found;
}

/**
 * Transpiles the component once: returns `{instantiate, modules}`, where `instantiate(imports)`
 * makes a fresh instance (used again after a trap) from the compiled core modules.
 */
export async function prepare(bytes) {
  witVersions(bytes);
  await $init;
  let out;
  try {
    out = generate(bytes, {
      name: 'stub',
      instantiation: { tag: 'async' },
      noTypescript: true,
      noNodejsCompat: true,
    });
  } catch (e) {
    throw new ComponentLoadError(`jco cannot transpile the component: ${e?.message ?? e}`);
  }
  const modules = new Map();
  let js;
  for (const [name, data] of out.files) {
    if (name.endsWith('.wasm')) modules.set(name, await WebAssembly.compile(data));
    else if (name === 'stub.js') js = new TextDecoder().decode(data);
  }
  // The generated module imports nothing in instantiation mode: a data: URL loads it in the
  // browser and in Node.js alike.
  const url = `data:text/javascript;base64,${base64Encode(new TextEncoder().encode(js))}`;
  const generated = await import(/* @vite-ignore */ url);
  const instantiate = async (imports) => {
    const wasi = new WASIShim({
      sandbox: { preopens: {}, env: {}, args: ['stub'], enableNetwork: false },
    }).getImportObject();
    return generated.instantiate((name) => modules.get(name), { ...wasi, ...imports });
  };
  return { instantiate, imports: out.imports };
}

function base64Encode(bytes) {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}
