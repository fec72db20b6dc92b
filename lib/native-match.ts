/** Native functions of the image-to-flow path (features, flow read-out, warping). Filled in by lib/match.ts's area. */
// biome-ignore lint/suspicious/noEmptyInterface: extended as the matching functions land
export interface NativeMatch {}
