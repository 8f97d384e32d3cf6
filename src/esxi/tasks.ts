/**
 * Waiting for vSphere tasks: poll `Task.info` until `success` or `error`, with a timeout and an
 * AbortSignal. Polling (rather than WaitForUpdatesEx) keeps the client to one simple call and
 * costs little: vSphere tasks here last seconds to minutes.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { callThrowing, readRef, type CallOptions, type VimClient } from './client.js';
import { EsxiAbortedError, EsxiTimeoutError, TaskFailedError, faultToError, type EsxiError } from './errors.js';
import { getProperties } from './properties.js';
import type { MoRef } from './soap.js';
import { child, childText, xsiType, type XmlElement } from './xml.js';

/** Options of task waiting. */
export interface WaitOptions extends CallOptions {
  /** Give up after this many milliseconds (default 30 minutes). */
  timeoutMs?: number;
  /** Called with the task's progress percentage when the server reports one. */
  onProgress?: (percent: number) => void;
}

/** The final `Task.info` of a successful task. */
export interface TaskOutcome {
  /** `info.result` element (e.g. the new VM reference), when the task returns one. */
  result: XmlElement | undefined;
  /** `info.result` read as a managed object reference, when it is one. */
  resultRef: MoRef | undefined;
}

function taskError(info: XmlElement, task: MoRef, what: string): EsxiError {
  const error = child(info, 'error');
  const fault = child(error, 'fault');
  const type = (fault && xsiType(fault)) ?? 'RuntimeFault';
  const message = childText(error, 'localizedMessage') ?? '';
  const typed = faultToError(type, message, `${what} (task ${task.value})`, { task: task.value });
  // Keep specific classes (InvalidState, FileNotFound...) but mark that a task carried them.
  return typed.code === 'ESXI_SOAP_FAULT' ? new TaskFailedError(typed.message, { faultType: type, details: { task: task.value } }) : typed;
}

/** Poll a task until it finishes. Rejects with a typed error carrying the task's fault. */
export async function waitForTask(client: VimClient, task: MoRef, what: string, options: WaitOptions = {}): Promise<TaskOutcome> {
  const deadline = Date.now() + (options.timeoutMs ?? 30 * 60_000);
  let delay = 100;
  for (;;) {
    if (options.signal?.aborted) throw new EsxiAbortedError(`${what}: aborted while waiting for task ${task.value}`);
    const props = await getProperties(client, task, ['info'], options);
    const info = props.get('info');
    const state = childText(info, 'state');
    if (info && state === 'success') {
      const result = child(info, 'result');
      return { result, resultRef: result ? readRef(result) : undefined };
    }
    if (info && state === 'error') throw taskError(info, task, what);
    const progress = childText(info, 'progress');
    if (progress !== undefined) options.onProgress?.(Number(progress));
    if (Date.now() >= deadline) throw new EsxiTimeoutError(`${what}: task ${task.value} still ${state ?? 'unknown'} after ${options.timeoutMs ?? 1_800_000} ms`);
    try {
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), undefined, { signal: options.signal });
    } catch {
      throw new EsxiAbortedError(`${what}: aborted while waiting for task ${task.value}`);
    }
    delay = Math.min(delay * 2, 2000);
  }
}

/** Call a `*_Task` method and wait for its task. */
export async function runTask(client: VimClient, method: string, self: MoRef, params: readonly string[], options: WaitOptions = {}): Promise<TaskOutcome> {
  const response = await callThrowing(client, method, self, params, options);
  const task = readRef(child(response, 'returnval'));
  if (!task) throw new TaskFailedError(`${method}: server returned no task reference`);
  return waitForTask(client, task, `${method} on ${self.type} ${self.value}`, options);
}
