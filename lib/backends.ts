import { type NativeBackends, type NativeBuildInfo, native } from './native';

/** What this build has and what this machine offers: CPU SIMD level and threads; CUDA compiled/available/devices/reason. */
export type Backends = NativeBackends;

/** Backends compiled in and usable now. Cheap: the CUDA probe runs once per process. */
export function backends(): Backends {
  return native().backends();
}

/** How the addon was built (build system, CUDA compiled in, N-API version, compiler). */
export function buildInfo(): NativeBuildInfo & { version: string } {
  return { ...native().buildInfo(), version: version() };
}

/** The package version. */
export function version(): string {
  return (require('../package.json') as { version: string }).version;
}
