/** podman 4.3 with the CNI backend (libcni 1.1), configured only through env and a scratch dir. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class PodmanRig {
  readonly confDir: string;
  readonly env: NodeJS.ProcessEnv;
  static readonly IMAGE = 'localhost/plexus-busybox:latest';

  constructor(
    readonly dir: string,
    pluginDirs: string[],
  ) {
    this.confDir = join(dir, 'cni');
    mkdirSync(this.confDir, { recursive: true });
    // crun fails on hybrid cgroups and nproc above the hard limit fails: runc and explicit ulimits.
    writeFileSync(
      join(dir, 'containers.conf'),
      `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ${JSON.stringify(pluginDirs)}
network_config_dir = "${this.confDir}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "${join(dir, 'events.log')}"
tmp_dir = "${join(dir, 'tmp')}"
`,
    );
    writeFileSync(join(dir, 'storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${join(dir, 'storage')}"\nrunroot = "${join(dir, 'run')}"\n`);
    this.env = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf'), CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf') };
  }

  podman(args: string[]): string {
    return execFileSync('podman', args, { env: this.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  }

  /** A busybox image imported from Debian's busybox-static (no registry). */
  importBusybox(): void {
    const root = join(this.dir, 'rootfs');
    mkdirSync(join(root, 'bin'), { recursive: true });
    execFileSync('cp', ['/bin/busybox', join(root, 'bin', 'busybox')]);
    for (const applet of ['sh', 'sleep', 'ip', 'cat']) symlinkSync('busybox', join(root, 'bin', applet));
    const tar = join(this.dir, 'busybox.tar');
    execFileSync('tar', ['-C', root, '-cf', tar, '.']);
    this.podman(['import', tar, PodmanRig.IMAGE]);
  }

  /** Removes every container and image of this rig's private storage. */
  cleanup(): void {
    try {
      this.podman(['rm', '-a', '-f', '-t', '0']);
      this.podman(['rmi', '-a', '-f']);
    } catch {
      /* already gone */
    }
  }
}
