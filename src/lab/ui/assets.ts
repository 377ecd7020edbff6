// The page's static files (src/lab/ui/static/: index.html, app.js, app.css). The bundle carries
// them inline: scripts/build.mjs defines __PODNET_UI_ASSETS__ as their contents, so
// dist/podnet.mjs serves the page without any file beside it. Run from source (tsx), they are
// read from src/lab/ui/static/ on each request (an edit shows on reload).
import { readFileSync } from 'node:fs';

declare const __PODNET_UI_ASSETS__: Record<string, string> | undefined;

export const ASSET_NAMES = ['index.html', 'app.js', 'app.css'] as const;
export type AssetName = (typeof ASSET_NAMES)[number];

export const ASSET_TYPES: Record<AssetName, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

export function asset(name: AssetName): string {
  if (typeof __PODNET_UI_ASSETS__ !== 'undefined') {
    const text = __PODNET_UI_ASSETS__[name];
    if (typeof text !== 'string') throw new Error(`the bundle carries no ${name} for the lab's page (scripts/build.mjs)`);
    return text;
  }
  return readFileSync(new URL(`./static/${name}`, import.meta.url), 'utf8');
}
