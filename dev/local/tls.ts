/**
 * A throwaway self-signed certificate for Postgres `ssl = on`, made with the openssl CLI (which
 * Debian's postgresql package brings, through ssl-cert). Its names are localhost and 127.0.0.1,
 * so a client that trusts the certificate itself as its CA (`sslrootcert=<certFile>`) verifies
 * it fully (`sslmode=verify-full`). As root, the files are handed to the `postgres` OS user (the
 * server refuses a key it does not own or that others can read).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync } from 'node:fs';
import path from 'node:path';

export interface SelfSignedCert {
  readonly certFile: string;
  readonly keyFile: string;
}

export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Write server.crt / server.key (RSA 2048, 1 day, CN=localhost, names localhost and 127.0.0.1) into `dir`. */
export function makeSelfSignedCert(dir: string): SelfSignedCert {
  const certFile = path.join(dir, 'server.crt');
  const keyFile = path.join(dir, 'server.key');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  chmodSync(keyFile, 0o600);
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    for (const f of [dir, certFile, keyFile]) chownSync(f, uid, gid);
  }
  return { certFile, keyFile };
}
