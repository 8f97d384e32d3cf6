/**
 * Transfer helpers shared by every way of moving bytes (the bandwidth cap of throttle.ts).
 *
 * @module
 */
export { checkBandwidthLimit, createThrottle, MIN_BANDWIDTH_LIMIT, throttleSchema, type ThrottleOptions } from './throttle.js';
export {
  DECOMPRESSOR_FAILED_LINE,
  DEFAULT_COMPRESSOR_BYTES_PER_SECOND,
  DEFAULT_LEVEL,
  DECOMPRESSOR_FAILED_STATUS,
  chooseCodec,
  compressStream,
  decompressingArgv,
  decompressorFailure,
  localCompressors,
  measureLinkThroughput,
  type LinkMeasureOptions,
  probeCodecs,
  type CodecChoice,
  type CodecChoiceInput,
  type CommandRunner,
  type CompressOptions,
  type CompressionRequest,
  type HostCodecs,
  type WireCodec,
} from './compression.js';
export { countWireBytes, type WireCountOptions } from './wire.js';
