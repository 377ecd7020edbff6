// Offline test image: a rootfs with static busybox and its applet links, packed as
// a one-layer OCI image archive (for `ctr images import`) or streamed as a plain
// tar (for `podman import`). Nothing is downloaded.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, stat, symlink, writeFile, chmod } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from './common.js';

export const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

export function findBusybox(): string | undefined {
  return BUSYBOX_CANDIDATES.find((p) => existsSync(p));
}

/** Command the image runs when none is given (also the CRI sandbox "pause" process). */
export const IMAGE_DEFAULT_CMD = ['/bin/sleep', '2147483647'];
export const IMAGE_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Builds a busybox rootfs in `dir` (created). Returns `dir`. */
export async function buildBusyboxRootfs(dir: string): Promise<string> {
  const busybox = findBusybox();
  if (!busybox) throw new Error('busybox not found (install busybox-static)');
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'run', 'var/run']) {
    await mkdir(join(dir, d), { recursive: true });
  }
  await chmod(join(dir, 'tmp'), 0o1777);
  await copyFile(busybox, join(dir, 'bin/busybox'));
  await chmod(join(dir, 'bin/busybox'), 0o755);
  const list = await run(busybox, ['--list-full']);
  for (const rel of list.stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
    if (rel === 'bin/busybox') continue;
    const target = join(dir, rel);
    await mkdir(dirname(target), { recursive: true });
    if (!existsSync(target)) await symlink('/bin/busybox', target);
  }
  await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  await writeFile(join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  await writeFile(join(dir, 'etc/hosts'), '127.0.0.1 localhost\n');
  return dir;
}

/** Deterministic uncompressed tar of a directory's contents (root-owned). */
export async function tarDirectory(dir: string, outFile: string): Promise<void> {
  await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-C', dir, '-cf', outFile, '.']);
}

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function goArch(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'arm64':
      return 'arm64';
    case 'arm':
      return 'arm';
    case 'ppc64':
      return 'ppc64le';
    case 's390x':
      return 's390x';
    case 'riscv64':
      return 'riscv64';
    default:
      return process.arch;
  }
}

export interface OciArchive {
  /** Path of the OCI image-layout tar. */
  archive: string;
  /** Fully-qualified image reference stored in the archive (io.containerd.image.name). */
  ref: string;
  manifestDigest: string;
}

/**
 * Packs `rootfs` as a one-layer OCI image layout archive at `outFile`, named `ref`
 * (fully qualified, e.g. docker.io/podnet/rt-busybox:test). Digests via node:crypto.
 */
export async function buildOciArchive(rootfs: string, workDir: string, ref: string, outFile: string): Promise<OciArchive> {
  const layout = join(workDir, 'oci-layout-dir');
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });

  const layerTmp = join(workDir, 'layer.tar');
  await tarDirectory(rootfs, layerTmp);
  const layer = await readFile(layerTmp);
  const layerDigest = sha256(layer);
  await writeFile(join(blobs, layerDigest), layer);

  const config = Buffer.from(
    JSON.stringify({
      created: '1970-01-01T00:00:00Z',
      architecture: goArch(),
      os: 'linux',
      config: { Env: [IMAGE_PATH_ENV], Cmd: IMAGE_DEFAULT_CMD, WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      history: [{ created: '1970-01-01T00:00:00Z', created_by: 'podnet test harness: busybox-static rootfs' }],
    }),
  );
  const configDigest = sha256(config);
  await writeFile(join(blobs, configDigest), config);

  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }],
    }),
  );
  const manifestDigest = sha256(manifest);
  await writeFile(join(blobs, manifestDigest), manifest);

  const tag = ref.includes(':') ? ref.slice(ref.lastIndexOf(':') + 1) : 'latest';
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${manifestDigest}`,
          size: manifest.length,
          platform: { architecture: goArch(), os: 'linux' },
          annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', layout, '-cf', outFile, 'oci-layout', 'index.json', 'blobs']);
  await stat(outFile);
  return { archive: outFile, ref, manifestDigest: `sha256:${manifestDigest}` };
}
