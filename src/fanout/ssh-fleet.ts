// Placeholder until the SSH transport lands: refuses clearly.
import { CorralError } from '../api/errors.js';
import type { Fleet } from './fleet.js';

export function openSshFleet(_hostsFile: string, _env: NodeJS.ProcessEnv): Promise<Fleet> {
  return Promise.reject(new CorralError('USAGE', '--ssh is not available in this build yet'));
}
