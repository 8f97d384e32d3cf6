/**
 * Typed errors of the vSphere (vim25) client. SOAP faults keep the server's fault type and
 * message; each well-known fault gets its own class so callers can tell them apart with its
 * static `isInstance` (`InvalidStateError.isInstance(e)`), which works across copies of the package.
 *
 * @module
 */
import { ApMigrateError, type ApMigrateErrorOptions } from '../errors.js';

/** Stable codes an {@link EsxiError} carries (one per subclass; `ESXI_OVF_REJECTED` is `OvfImportRejectedError`'s). */
export type EsxiErrorCode =
  | 'ESXI_INVALID_LOGIN'
  | 'ESXI_NOT_AUTHENTICATED'
  | 'ESXI_FILE_NOT_FOUND'
  | 'ESXI_INVALID_STATE'
  | 'ESXI_ALREADY_EXISTS'
  | 'ESXI_NOT_FOUND'
  | 'ESXI_METHOD_NOT_SUPPORTED'
  | 'ESXI_TASK_FAILED'
  | 'ESXI_SOAP_FAULT'
  | 'ESXI_TRANSPORT'
  | 'ESXI_CERTIFICATE'
  | 'ESXI_UNSAFE_PATH'
  | 'ESXI_TIMEOUT'
  | 'ESXI_PROTOCOL'
  | 'ESXI_OVF_REJECTED'
  | 'ABORTED';

/** Base class of every error from the vSphere client. `faultType` is the vim25 fault name when the server sent one. */
export class EsxiError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.EsxiError');
  }

  /** Whether `value` is an EsxiError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is EsxiError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.EsxiError');
  }

  /** The stable code, narrowed to vSphere client codes. */
  declare readonly code: EsxiErrorCode;
  /** The vim25 fault type (e.g. `InvalidPowerState`), or undefined for transport errors. */
  readonly faultType: string | undefined;

  constructor(code: EsxiErrorCode, message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super(code, message, { ...options, details: { ...options.details, faultType: options.faultType } });
    this.faultType = options.faultType;
  }
}

/** The server rejected the user name or password (fault `InvalidLogin`). */
export class InvalidLoginError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.InvalidLoginError');
  }

  /** Whether `value` is an InvalidLoginError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is InvalidLoginError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.InvalidLoginError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_INVALID_LOGIN', message, { ...options, faultType: 'InvalidLogin' });
  }
}

/** The session is not (or no longer) logged in (fault `NotAuthenticated`). */
export class NotAuthenticatedError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.NotAuthenticatedError');
  }

  /** Whether `value` is a NotAuthenticatedError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is NotAuthenticatedError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.NotAuthenticatedError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_NOT_AUTHENTICATED', message, { ...options, faultType: 'NotAuthenticated' });
  }
}

/** A datastore file or directory does not exist (fault `FileNotFound`, or HTTP 404 on `/folder`). */
export class FileNotFoundError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.FileNotFoundError');
  }

  /** Whether `value` is a FileNotFoundError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is FileNotFoundError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.FileNotFoundError');
  }

  constructor(message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super('ESXI_FILE_NOT_FOUND', message, { faultType: 'FileNotFound', ...options });
  }
}

/** The object is in the wrong state for the call (`InvalidState`, `InvalidPowerState`, ...). */
export class InvalidStateError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.InvalidStateError');
  }

  /** Whether `value` is an InvalidStateError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is InvalidStateError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.InvalidStateError');
  }

  constructor(message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super('ESXI_INVALID_STATE', message, { faultType: 'InvalidState', ...options });
  }
}

/** Something with that name or path already exists (`AlreadyExists`, `DuplicateName`, `FileAlreadyExists`). */
export class AlreadyExistsError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.AlreadyExistsError');
  }

  /** Whether `value` is an AlreadyExistsError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is AlreadyExistsError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.AlreadyExistsError');
  }

  constructor(message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super('ESXI_ALREADY_EXISTS', message, { faultType: 'AlreadyExists', ...options });
  }
}

/** A named inventory object (VM, datastore, datacenter) was not found. */
export class ObjectNotFoundError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.ObjectNotFoundError');
  }

  /** Whether `value` is an ObjectNotFoundError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is ObjectNotFoundError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.ObjectNotFoundError');
  }

  constructor(message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super('ESXI_NOT_FOUND', message, options);
  }
}

/** The server does not implement a method (fault `MethodNotFound`, e.g. vcsim's missing `ExportVm`). */
export class MethodNotSupportedError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.MethodNotSupportedError');
  }

  /** Whether `value` is a MethodNotSupportedError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is MethodNotSupportedError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.MethodNotSupportedError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_METHOD_NOT_SUPPORTED', message, { ...options, faultType: 'MethodNotFound' });
  }
}

/** A vSphere task ended in the `error` state; `faultType` is the task's fault. */
export class TaskFailedError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.TaskFailedError');
  }

  /** Whether `value` is a TaskFailedError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is TaskFailedError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.TaskFailedError');
  }

  constructor(message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super('ESXI_TASK_FAILED', message, options);
  }
}

/** Any other SOAP fault; `faultType` names it. */
export class SoapFaultError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.SoapFaultError');
  }

  /** Whether `value` is a SoapFaultError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is SoapFaultError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.SoapFaultError');
  }

  constructor(message: string, options: ApMigrateErrorOptions & { faultType?: string } = {}) {
    super('ESXI_SOAP_FAULT', message, options);
  }
}

/** Network, TLS or HTTP failure talking to the host (retryable unless it is a TLS trust failure). */
export class EsxiTransportError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.EsxiTransportError');
  }

  /** Whether `value` is an EsxiTransportError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is EsxiTransportError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.EsxiTransportError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_TRANSPORT', message, { isRetryable: true, ...options });
  }
}

/** The server's certificate did not match the pinned thumbprint or failed verification. */
export class CertificateMismatchError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.CertificateMismatchError');
  }

  /** Whether `value` is a CertificateMismatchError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is CertificateMismatchError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.CertificateMismatchError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_CERTIFICATE', message, options);
  }
}

/**
 * A file or directory name from a host (a datastore listing, a `.vmx` path, `layoutEx`, an export
 * lease's `targetId`) is not one safe path component: empty, `.` or `..`, with `/`, a backslash,
 * NUL or control characters, or absolute. Refused before it becomes a URL or a datastore path at the
 * destination, where `..` would reach outside the VM's directory. `details` names it and why.
 */
export class UnsafeDatastorePathError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.UnsafeDatastorePathError');
  }

  /** Whether `value` is an UnsafeDatastorePathError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is UnsafeDatastorePathError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.UnsafeDatastorePathError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_UNSAFE_PATH', message, options);
  }
}

/** A wait (task, lease) took longer than allowed. */
export class EsxiTimeoutError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.EsxiTimeoutError');
  }

  /** Whether `value` is an EsxiTimeoutError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is EsxiTimeoutError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.EsxiTimeoutError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_TIMEOUT', message, { isRetryable: true, ...options });
  }
}

/** The caller's AbortSignal fired. */
export class EsxiAbortedError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.EsxiAbortedError');
  }

  /** Whether `value` is an EsxiAbortedError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is EsxiAbortedError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.EsxiAbortedError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ABORTED', message, options);
  }
}

/** The server answered something this client cannot understand. */
export class ProtocolError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.ProtocolError');
  }

  /** Whether `value` is a ProtocolError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is ProtocolError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.ProtocolError');
  }

  constructor(message: string, options: ApMigrateErrorOptions = {}) {
    super('ESXI_PROTOCOL', message, options);
  }
}

const FILE_NOT_FOUND = new Set(['FileNotFound', 'NotFound']);
const INVALID_STATE = new Set(['InvalidState', 'InvalidPowerState', 'InvalidDatastoreState', 'InvalidHostState', 'TaskInProgress']);
const ALREADY_EXISTS = new Set(['AlreadyExists', 'DuplicateName', 'FileAlreadyExists']);

/** Map a vim25 fault type and the server's message to the matching typed error. */
export function faultToError(faultType: string, message: string, context: string, details: Record<string, unknown> = {}): EsxiError {
  const text = `${context}: ${message || faultType} (${faultType})`;
  const opts = { faultType, details };
  if (faultType === 'InvalidLogin') return new InvalidLoginError(text, { details });
  if (faultType === 'NotAuthenticated') return new NotAuthenticatedError(text, { details });
  if (faultType === 'MethodNotFound') return new MethodNotSupportedError(text, { details });
  if (faultType === 'ManagedObjectNotFound') return new ObjectNotFoundError(text, opts);
  if (FILE_NOT_FOUND.has(faultType)) return new FileNotFoundError(text, opts);
  if (INVALID_STATE.has(faultType)) return new InvalidStateError(text, opts);
  if (ALREADY_EXISTS.has(faultType)) return new AlreadyExistsError(text, opts);
  return new SoapFaultError(text, opts);
}

/** Turn anything caught into an EsxiError (unknown values become a ProtocolError). */
export function asEsxiError(value: unknown, context: string): EsxiError {
  if (EsxiError.isInstance(value)) return value;
  const message = value instanceof Error ? value.message : String(value);
  return new ProtocolError(`${context}: ${message}`, { cause: value });
}
