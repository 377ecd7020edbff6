// The iptables engine of podnet's service proxy (mode 'iptables'): kube-proxy's chain layout under
// PODNET- names, applied with iptables-restore --noflush through iptables-nft or iptables-legacy.
export { IptablesEngine, createIptablesEngine, type IptablesEngineOptions } from './engine.js';
export * from './names.js';
export * from './render.js';
export { observedFromSave, programmedFromSave, podnetRules, tokenize, targetOf } from './save.js';
