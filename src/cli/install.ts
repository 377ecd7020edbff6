// `podnet install` / `podnet uninstall`: put a self-contained podnet into a prefix (bundles,
// native parts, runtime dependencies), the CNI executables and conflist, and the agent's
// systemd unit; and remove exactly that again. Layout in src/install/plan.ts.
// Exit codes: 0 done; 1 refused (a file in the way is not ours, or changed since install:
// nothing was written or removed); 2 cannot (bad options, incomplete source, nothing
// installed); 3 failed part-way (the manifest lists what was written: `podnet uninstall` removes it).
import { Option, type Command } from 'commander';
import { resolve } from 'node:path';

export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;
export const EXIT_FAILED = 3;

const oct = (m: number) => '0' + m.toString(8);

export function registerInstallCommands(program: Command): void {
  program
    .command('install')
    .description('install podnet into a prefix (bundles, C client, podnet-tund, koffi\'s native binary, runtime dependencies), the CNI executables and conflist pointing at it, and a systemd unit for the agent; runs without this checkout afterwards')
    .option('--prefix <dir>', 'where podnet goes (bin/podnet, lib/, install-manifest.json)', '/opt/podnet')
    .option('--cni-bin-dir <dir>', 'CNI bin dir for podnet and podnet-ipam', '/opt/cni/bin')
    .option('--cni-conf-dir <dir>', 'CNI conf dir for 10-podnet.conflist', '/etc/cni/net.d')
    .option('--no-cni-conf', 'write no conflist')
    .option('--systemd-dir <dir>', 'where podnet-agent.service goes (systemctl is never run)', '/etc/systemd/system')
    .option('--no-systemd', 'write no systemd unit')
    .option('--socket <path>', 'agent socket the CNI client talks to and the unit\'s agent serves', '/run/podnet/podnet.sock')
    .option('--network <name>', 'network name in the conflist', 'podnet')
    .option('--subnet <cidr>', 'pod subnet for the conflist (default: the agent\'s subnet file)')
    .addOption(new Option('--mode <mode>', 'pod wiring mode in the conflist').choices(['bridge', 'routed', 'macvlan']).default('bridge'))
    .option('--shell-client', 'install the POSIX shell CNI client even when the compiled one is there')
    .option('--force', 'overwrite files podnet install did not write, or that changed since it did')
    .option('--dry-run', 'print the plan, write nothing')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText('after', `
Layout: <prefix>/bin/podnet (launcher: this Node, ${process.execPath}, and the bundle), <prefix>/lib/{package.json,dist/,node_modules/},
<prefix>/install-manifest.json (every file written, with its SHA-256, and the directories created).
Exit codes: 0 installed; 1 refused (a file in the way was not written by podnet install, or changed since:
nothing written; --force overwrites); 2 bad options or incomplete source (run \`npm run build\`);
3 failed part-way (the manifest lists what was written: \`podnet uninstall\` removes it).`)
    .action(async (o: {
      prefix: string; cniBinDir: string; cniConfDir: string; cniConf: boolean; systemdDir: string; systemd: boolean; socket: string;
      network: string; subnet?: string; mode: 'bridge' | 'routed' | 'macvlan'; shellClient?: boolean; force?: boolean; dryRun?: boolean; output: string;
    }) => {
      const { packageRoot } = await import('../cni/install.js');
      const { SUPPORTED_VERSIONS } = await import('../cni/version.js');
      const { scanSource } = await import('../install/source.js');
      const { planInstall } = await import('../install/plan.js');
      const { applyInstall, InstallRefused } = await import('../install/apply.js');
      const json = o.output === 'json';
      let plan;
      try {
        const src = scanSource(packageRoot());
        plan = planInstall(src, {
          prefix: resolve(o.prefix),
          cniBinDir: resolve(o.cniBinDir),
          cniConfDir: o.cniConf ? resolve(o.cniConfDir) : undefined,
          systemdDir: o.systemd ? resolve(o.systemdDir) : undefined,
          node: process.execPath,
          socket: resolve(o.socket),
          network: o.network,
          subnet: o.subnet,
          mode: o.mode,
          shellClient: o.shellClient,
          cniVersions: [...SUPPORTED_VERSIONS],
        });
      } catch (e) {
        process.stderr.write(`podnet install: ${(e as Error).message}\n`);
        process.exitCode = EXIT_USAGE;
        return;
      }
      if (o.dryRun) {
        const files = plan.entries.map((e) => ({ path: e.path, mode: oct(e.mode), role: e.role, from: e.from }));
        if (json) console.log(JSON.stringify({ dryRun: true, prefix: plan.prefix, source: plan.source, files, warnings: plan.warnings }, null, 2));
        else {
          for (const f of files) console.log(`${f.mode} ${f.role.padEnd(10)} ${f.path}`);
          for (const w of plan.warnings) console.log(`warning: ${w}`);
        }
        return;
      }
      try {
        const r = applyInstall(plan, { force: o.force, source: plan.source.root });
        const natives = r.files.filter((f) => f.role === 'native').map((f) => f.path);
        const byRole = (role: string) => r.files.filter((f) => f.role === role).map((f) => f.path);
        if (json) {
          console.log(JSON.stringify({
            prefix: r.prefix,
            manifest: r.manifest,
            source: plan.source,
            launcher: byRole('launcher')[0],
            cni: byRole('cni'),
            conflist: byRole('cni-conf')[0],
            unit: byRole('systemd')[0],
            natives,
            files: r.files.length,
            dirsCreated: r.dirsCreated,
            replaced: r.replaced,
            removedStale: r.removedStale,
            warnings: r.warnings,
          }, null, 2));
        } else {
          console.log(`installed podnet ${plan.source.version} into ${r.prefix} (${r.files.length} files; manifest ${r.manifest})`);
          for (const p of [...byRole('launcher'), ...natives.filter((n) => !n.includes('/node_modules/')), ...byRole('cni'), ...byRole('cni-conf'), ...byRole('systemd')]) console.log(`  ${p}`);
          for (const n of natives.filter((n) => n.includes('/node_modules/'))) console.log(`  ${n} (koffi's native binary)`);
          for (const w of r.warnings) console.log(`warning: ${w}`);
          if (byRole('systemd').length) console.log('next: systemctl daemon-reload && systemctl enable --now podnet-agent');
        }
      } catch (e) {
        process.stderr.write(`podnet install: ${(e as Error).message}\n`);
        process.exitCode = e instanceof InstallRefused ? EXIT_REFUSED : EXIT_FAILED;
      }
    });

  program
    .command('uninstall')
    .description('remove what `podnet install` wrote (the files its manifest lists, and the directories it created), nothing else')
    .option('--prefix <dir>', 'the install\'s prefix (holds install-manifest.json)', '/opt/podnet')
    .option('--force', 'also remove files that changed since install')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText('after', `
Directories the install created are removed when empty; one holding files podnet did not write stays.
Exit codes: 0 removed; 1 refused (files changed since install: nothing removed; --force removes them);
2 nothing installed at --prefix; 3 failed part-way.`)
    .action(async (o: { prefix: string; force?: boolean; output: string }) => {
      const { uninstall, InstallRefused, NotInstalled } = await import('../install/apply.js');
      try {
        const r = uninstall(resolve(o.prefix), { force: o.force });
        if (o.output === 'json') console.log(JSON.stringify(r, null, 2));
        else {
          console.log(`removed ${r.removed.length} files and ${r.dirsRemoved.length} directories of the install at ${r.prefix}`);
          for (const p of r.forced) console.log(`  removed although changed since install: ${p}`);
          for (const p of r.missing) console.log(`  already gone: ${p}`);
          for (const d of r.dirsKept) console.log(`  kept ${d}: it holds files podnet install did not write`);
        }
      } catch (e) {
        process.stderr.write(`podnet uninstall: ${(e as Error).message}\n`);
        process.exitCode = e instanceof InstallRefused ? EXIT_REFUSED : e instanceof NotInstalled ? EXIT_USAGE : EXIT_FAILED;
      }
    });
}
