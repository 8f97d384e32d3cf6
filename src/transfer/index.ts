/**
 * Transfer helpers shared by every way of moving bytes (the bandwidth cap of throttle.ts).
 *
 * @module
 */
export { checkBandwidthLimit, createThrottle, MIN_BANDWIDTH_LIMIT, throttleSchema, type ThrottleOptions } from './throttle.js';
export {
  chooseCodec,
  compressStream,
  decompressingArgv,
  decompressorFailure,
  localCompressors,
  measureLinkThroughput,
  probeCodecs,
  type CodecChoice,
  type CompressionRequest,
  type HostCodecs,
  type WireCodec,
} from './compression.js';
