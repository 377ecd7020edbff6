// The netfilter evaluation of `podnet trace` over real rulesets captured from a lab (vxlan, 2 nodes,
// pods a on n1 and b on n2 serving port 80; services web -> a,b; empty without endpoints; np a
// NodePort (30000) -> a,b; aff with ClientIP affinity 600 s -> a,b; loc a NodePort (30001) with
// externalTrafficPolicy Local -> a): node n1's `nft -j list ruleset` (the netdev table and the IPv6
// sets left out; the affinity set holds the entry pod a's connection to aff made) and, from the
// same lab with --proxy-mode iptables, n1's iptables-save. Each case is checked against what the
// kernel did in the lab (which endpoints answered, a reset for empty, masquerade seen by the pod).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateHook, explainHook, isXtablesName, parseXtRule, tablesFromIptablesSave, tablesFromNftJson, traceHook, type HookInput, type NfTable } from '../../src/trace/netfilter/index.js';
import { parseConntrack, type ConntrackEntry, type TraceView } from '../../src/trace/view.js';

// node n1 (nftables mode): 192.168.200.1 on eth0, its pod subnet 10.244.155.0/24 on podnet0 (.1) and
// the VXLAN device podnet.1 (.0); pod a is 10.244.155.2, pod b (on n2) 10.244.51.2
const N1 = { nftables: [
  {"table":{"family":"inet","name":"podnet-cluster","handle":3}},
  {"chain":{"family":"inet","table":"podnet-cluster","name":"tunnel-output","handle":1,"type":"filter","hook":"output","prio":-300,"policy":"accept"}},
  {"chain":{"family":"inet","table":"podnet-cluster","name":"postrouting","handle":2,"type":"nat","hook":"postrouting","prio":100,"policy":"accept"}},
  {"rule":{"family":"inet","table":"podnet-cluster","chain":"tunnel-output","handle":3,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":8472}},{"notrack":null}]}},
  {"rule":{"family":"inet","table":"podnet-cluster","chain":"postrouting","handle":4,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.244.0.0","len":16}}}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"10.244.0.0","len":16}}}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"224.0.0.0","len":4}}}},{"counter":{"packets":0,"bytes":0}},{"masquerade":null}]}},
  {"table":{"family":"inet","name":"podnet-proxy","handle":5}},
  {"map":{"family":"inet","name":"svc4","table":"podnet-proxy","type":["ipv4_addr","inet_proto","inet_service"],"handle":7,"map":"verdict","elem":[[{"concat":["192.168.200.1","tcp",30000]},{"goto":{"target":"lb-2-all"}}],[{"concat":["192.168.200.1","tcp",30001]},{"goto":{"target":"lb-1-none"}}],[{"concat":["10.96.0.2","tcp",80]},{"goto":{"target":"lb-2-int"}}],[{"concat":["10.96.0.4","tcp",81]},{"goto":{"target":"lb-2-int"}}],[{"concat":["10.96.0.5","tcp",82]},{"goto":{"target":"lb-2-int-aff600"}}],[{"concat":["10.96.0.6","tcp",83]},{"goto":{"target":"lb-1-int"}}]]}},
  {"map":{"family":"inet","name":"noep4","table":"podnet-proxy","type":["ipv4_addr","inet_proto","inet_service"],"handle":8,"map":"verdict","elem":[[{"concat":["10.96.0.3","tcp",80]},{"goto":{"target":"reject-no-endpoints"}}]]}},
  {"set":{"family":"inet","name":"hairpin4","table":"podnet-proxy","type":["ipv4_addr","ipv4_addr"],"handle":9,"elem":[{"concat":["10.244.51.2","10.244.51.2"]},{"concat":["10.244.155.2","10.244.155.2"]}]}},
  {"set":{"family":"inet","name":"cluster-nets4","table":"podnet-proxy","type":"ipv4_addr","handle":10,"flags":["interval"],"elem":[{"prefix":{"addr":"10.244.0.0","len":16}}]}},
  {"map":{"family":"inet","name":"ep4-0","table":"podnet-proxy","type":["ipv4_addr","inet_proto","inet_service"],"handle":33,"map":"ipv4_addr . inet_service","elem":[[{"concat":["192.168.200.1","tcp",30000]},{"concat":["10.244.155.2",80]}],[{"concat":["192.168.200.1","tcp",30001]},{"concat":["10.244.155.2",80]}],[{"concat":["10.96.0.2","tcp",80]},{"concat":["10.244.155.2",80]}],[{"concat":["10.96.0.4","tcp",81]},{"concat":["10.244.155.2",80]}],[{"concat":["10.96.0.5","tcp",82]},{"concat":["10.244.155.2",80]}],[{"concat":["10.96.0.6","tcp",83]},{"concat":["10.244.155.2",80]}]]}},
  {"map":{"family":"inet","name":"ep4-1","table":"podnet-proxy","type":["ipv4_addr","inet_proto","inet_service"],"handle":34,"map":"ipv4_addr . inet_service","elem":[[{"concat":["192.168.200.1","tcp",30000]},{"concat":["10.244.51.2",80]}],[{"concat":["10.96.0.2","tcp",80]},{"concat":["10.244.51.2",80]}],[{"concat":["10.96.0.4","tcp",81]},{"concat":["10.244.51.2",80]}],[{"concat":["10.96.0.5","tcp",82]},{"concat":["10.244.51.2",80]}]]}},
  {"set":{"family":"inet","name":"aff4-0","table":"podnet-proxy","type":["ipv4_addr","ipv4_addr","inet_proto","inet_service"],"handle":52,"size":65535,"flags":["timeout"],"timeout":86400,"elem":[{"elem":{"val":{"concat":["10.244.155.2","10.96.0.5","tcp",82]},"timeout":600,"expires":569}}]}},
  {"set":{"family":"inet","name":"aff4-1","table":"podnet-proxy","type":["ipv4_addr","ipv4_addr","inet_proto","inet_service"],"handle":53,"size":65535,"flags":["timeout"],"timeout":86400}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"nat-prerouting","handle":1,"type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"nat-output","handle":2,"type":"nat","hook":"output","prio":-100,"policy":"accept"}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"services","handle":3}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"nat-postrouting","handle":4,"type":"nat","hook":"postrouting","prio":100,"policy":"accept"}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"no-endpoints","handle":5}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"reject-no-endpoints","handle":6}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"pick-0","handle":30}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"pick-1","handle":31}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"lb-2-int","handle":32}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"lb-2-all","handle":45}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"pin-0-600","handle":49}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"pin-1-600","handle":50}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"lb-2-int-aff600","handle":51}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"lb-1-int","handle":70}},
  {"chain":{"family":"inet","table":"podnet-proxy","name":"lb-1-none","handle":71}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-prerouting","handle":692,"expr":[{"jump":{"target":"no-endpoints"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-prerouting","handle":693,"expr":[{"jump":{"target":"services"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-output","handle":694,"expr":[{"jump":{"target":"no-endpoints"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-output","handle":695,"expr":[{"jump":{"target":"services"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"services","handle":696,"expr":[{"vmap":{"key":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@svc4"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"services","handle":697,"expr":[{"vmap":{"key":{"concat":[{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@svc6"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-postrouting","handle":698,"expr":[{"match":{"op":"in","left":{"ct":{"key":"status"}},"right":"dnat"}},{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"payload":{"protocol":"ip","field":"daddr"}}]},"right":"@hairpin4"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-postrouting","handle":699,"expr":[{"match":{"op":"in","left":{"ct":{"key":"status"}},"right":"dnat"}},{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip6","field":"saddr"}},{"payload":{"protocol":"ip6","field":"daddr"}}]},"right":"@hairpin6"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-postrouting","handle":700,"expr":[{"match":{"op":"==","left":{"&":[{"meta":{"key":"mark"}},16384]},"right":0}},{"return":null}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-postrouting","handle":701,"expr":[{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"^":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"nat-postrouting","handle":702,"expr":[{"masquerade":{"flags":"fully-random"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"no-endpoints","handle":703,"expr":[{"vmap":{"key":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@noep4"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"no-endpoints","handle":704,"expr":[{"vmap":{"key":{"concat":[{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@noep6"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"reject-no-endpoints","handle":705,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"reject":{"type":"tcp reset"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"reject-no-endpoints","handle":706,"expr":[{"reject":{"type":"icmpx","expr":"port-unreachable"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pick-0","handle":707,"expr":[{"dnat":{"family":"ip","addr":{"map":{"key":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@ep4-0"}}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pick-0","handle":708,"expr":[{"dnat":{"family":"ip6","addr":{"map":{"key":{"concat":[{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@ep6-0"}}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pick-1","handle":709,"expr":[{"dnat":{"family":"ip","addr":{"map":{"key":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@ep4-1"}}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pick-1","handle":710,"expr":[{"dnat":{"family":"ip6","addr":{"map":{"key":{"concat":[{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@ep6-1"}}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int","handle":724,"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@cluster-nets4"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int","handle":725,"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"@cluster-nets6"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int","handle":727,"expr":[{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[0,{"goto":{"target":"pick-0"}}],[1,{"goto":{"target":"pick-1"}}]]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-all","handle":721,"expr":[{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-all","handle":723,"expr":[{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[0,{"goto":{"target":"pick-0"}}],[1,{"goto":{"target":"pick-1"}}]]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pin-0-600","handle":711,"expr":[{"set":{"op":"update","elem":{"elem":{"val":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"timeout":600}},"set":"@aff4-0"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pin-0-600","handle":712,"expr":[{"set":{"op":"update","elem":{"elem":{"val":{"concat":[{"payload":{"protocol":"ip6","field":"saddr"}},{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"timeout":600}},"set":"@aff6-0"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pin-0-600","handle":713,"expr":[{"goto":{"target":"pick-0"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pin-1-600","handle":714,"expr":[{"set":{"op":"update","elem":{"elem":{"val":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"timeout":600}},"set":"@aff4-1"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pin-1-600","handle":715,"expr":[{"set":{"op":"update","elem":{"elem":{"val":{"concat":[{"payload":{"protocol":"ip6","field":"saddr"}},{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"timeout":600}},"set":"@aff6-1"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"pin-1-600","handle":716,"expr":[{"goto":{"target":"pick-1"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":728,"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@cluster-nets4"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":729,"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"@cluster-nets6"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":730,"expr":[{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"right":"@aff4-0"}},{"goto":{"target":"pin-0-600"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":731,"expr":[{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip6","field":"saddr"}},{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"right":"@aff6-0"}},{"goto":{"target":"pin-0-600"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":732,"expr":[{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip","field":"saddr"}},{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"right":"@aff4-1"}},{"goto":{"target":"pin-1-600"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":733,"expr":[{"match":{"op":"==","left":{"concat":[{"payload":{"protocol":"ip6","field":"saddr"}},{"payload":{"protocol":"ip6","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"right":"@aff6-1"}},{"goto":{"target":"pin-1-600"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-2-int-aff600","handle":735,"expr":[{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[0,{"goto":{"target":"pin-0-600"}}],[1,{"goto":{"target":"pin-1-600"}}]]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-1-int","handle":717,"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@cluster-nets4"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-1-int","handle":718,"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"@cluster-nets6"}},{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-1-int","handle":719,"expr":[{"goto":{"target":"pick-0"}}]}},
  {"rule":{"family":"inet","table":"podnet-proxy","chain":"lb-1-none","handle":720,"expr":[{"goto":{"target":"pick-0"}}]}},
  {"table":{"family":"inet","name":"podnet","handle":6}},
  {"set":{"family":"inet","name":"masq_pods4","table":"podnet","type":"ipv4_addr","handle":2,"elem":[{"elem":{"val":"10.244.155.2","comment":"pnlab-nfcap:veth0d1dccf5f7f"}}]}},
  {"set":{"family":"inet","name":"masq_nets4","table":"podnet","type":"ipv4_addr","handle":3,"flags":["interval"],"elem":[{"prefix":{"addr":"10.244.0.0","len":16}}]}},
  {"chain":{"family":"inet","table":"podnet","name":"cni-masquerade","handle":1,"type":"nat","hook":"postrouting","prio":100,"policy":"accept"}},
  {"rule":{"family":"inet","table":"podnet","chain":"cni-masquerade","handle":6,"comment":"podnet ipMasq","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@masq_pods4"}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"@masq_nets4"}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"224.0.0.0","len":4}}}},{"masquerade":null}]}},
  {"rule":{"family":"inet","table":"podnet","chain":"cni-masquerade","handle":7,"comment":"podnet ipMasq","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":"@masq_pods6"}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip6","field":"daddr"}},"right":"@masq_nets6"}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip6","field":"daddr"}},"right":{"prefix":{"addr":"ff00::","len":8}}}},{"masquerade":null}]}}
] };

// node n1 of the iptables-mode lab: 192.168.135.1, podnet0 10.244.42.1; pod a 10.244.42.2, pod b 10.244.111.2
const N1_IPTABLES = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:PODNET-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j PODNET-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j PODNET-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j PODNET-SERVICES
-A PODNET-SERVICES -d 10.96.0.3/32 -p tcp -m comment --comment "podnet default/empty:80 cluster IP has no endpoints" -m tcp --dport 80 -j REJECT --reject-with tcp-reset
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PODNET-EXT-YE4KRHUCMTARAWDF - [0:0]
:PODNET-MARK-MASQ - [0:0]
:PODNET-NODEPORTS - [0:0]
:PODNET-POSTROUTING - [0:0]
:PODNET-SEP-BOVTSX5CDQLDTHJZ - [0:0]
:PODNET-SEP-CTMWS25N2ZNCDL4E - [0:0]
:PODNET-SEP-DVUV2HCC64NEZLV7 - [0:0]
:PODNET-SEP-GVDEIPJWYNHFLYKR - [0:0]
:PODNET-SEP-NPG43Q5DR4NIWTEL - [0:0]
:PODNET-SEP-VE5RFMLTNAVRUMEW - [0:0]
:PODNET-SERVICES - [0:0]
:PODNET-SVC-CVMJW3DXWMTNVZQK - [0:0]
:PODNET-SVC-XUV7W7ZLOQBHCAEP - [0:0]
:PODNET-SVC-YE4KRHUCMTARAWDF - [0:0]
-A PREROUTING -m comment --comment "podnet service portals" -j PODNET-SERVICES
-A OUTPUT -m comment --comment "podnet service portals" -j PODNET-SERVICES
-A POSTROUTING -m comment --comment "podnet postrouting rules" -j PODNET-POSTROUTING
-A PODNET-EXT-YE4KRHUCMTARAWDF -m comment --comment "podnet default/np:81 external traffic: masquerade" -j PODNET-MARK-MASQ
-A PODNET-EXT-YE4KRHUCMTARAWDF -m comment --comment "podnet default/np:81 external traffic" -j PODNET-SVC-YE4KRHUCMTARAWDF
-A PODNET-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A PODNET-NODEPORTS -d 192.168.135.1/32 -p tcp -m comment --comment "podnet default/np:81 nodePort" -m tcp --dport 30000 -j PODNET-EXT-YE4KRHUCMTARAWDF
-A PODNET-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A PODNET-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A PODNET-POSTROUTING -m comment --comment "podnet service traffic requiring SNAT" -j MASQUERADE --random-fully
-A PODNET-SEP-BOVTSX5CDQLDTHJZ -s 10.244.111.2/32 -m comment --comment "podnet default/aff:82 hairpin" -j PODNET-MARK-MASQ
-A PODNET-SEP-BOVTSX5CDQLDTHJZ -p tcp -m comment --comment "podnet default/aff:82" -m recent --set --name PODNET-SEP-BOVTSX5CDQLDTHJZ --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.111.2:80
-A PODNET-SEP-CTMWS25N2ZNCDL4E -s 10.244.42.2/32 -m comment --comment "podnet default/web:80 hairpin" -j PODNET-MARK-MASQ
-A PODNET-SEP-CTMWS25N2ZNCDL4E -p tcp -m comment --comment "podnet default/web:80" -j DNAT --to-destination 10.244.42.2:80
-A PODNET-SEP-DVUV2HCC64NEZLV7 -s 10.244.42.2/32 -m comment --comment "podnet default/aff:82 hairpin" -j PODNET-MARK-MASQ
-A PODNET-SEP-DVUV2HCC64NEZLV7 -p tcp -m comment --comment "podnet default/aff:82" -m recent --set --name PODNET-SEP-DVUV2HCC64NEZLV7 --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.42.2:80
-A PODNET-SEP-GVDEIPJWYNHFLYKR -s 10.244.111.2/32 -m comment --comment "podnet default/np:81 hairpin" -j PODNET-MARK-MASQ
-A PODNET-SEP-GVDEIPJWYNHFLYKR -p tcp -m comment --comment "podnet default/np:81" -j DNAT --to-destination 10.244.111.2:80
-A PODNET-SEP-NPG43Q5DR4NIWTEL -s 10.244.42.2/32 -m comment --comment "podnet default/np:81 hairpin" -j PODNET-MARK-MASQ
-A PODNET-SEP-NPG43Q5DR4NIWTEL -p tcp -m comment --comment "podnet default/np:81" -j DNAT --to-destination 10.244.42.2:80
-A PODNET-SEP-VE5RFMLTNAVRUMEW -s 10.244.111.2/32 -m comment --comment "podnet default/web:80 hairpin" -j PODNET-MARK-MASQ
-A PODNET-SEP-VE5RFMLTNAVRUMEW -p tcp -m comment --comment "podnet default/web:80" -j DNAT --to-destination 10.244.111.2:80
-A PODNET-SERVICES -d 10.96.0.4/32 -p tcp -m comment --comment "podnet default/np:81 cluster IP" -m tcp --dport 81 -j PODNET-SVC-YE4KRHUCMTARAWDF
-A PODNET-SERVICES -d 10.96.0.5/32 -p tcp -m comment --comment "podnet default/aff:82 cluster IP" -m tcp --dport 82 -j PODNET-SVC-XUV7W7ZLOQBHCAEP
-A PODNET-SERVICES -d 10.96.0.2/32 -p tcp -m comment --comment "podnet default/web:80 cluster IP" -m tcp --dport 80 -j PODNET-SVC-CVMJW3DXWMTNVZQK
-A PODNET-SERVICES -m comment --comment "podnet service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j PODNET-NODEPORTS
-A PODNET-SVC-CVMJW3DXWMTNVZQK ! -s 10.244.0.0/16 -d 10.96.0.2/32 -p tcp -m comment --comment "podnet default/web:80 cluster IP" -m tcp --dport 80 -j PODNET-MARK-MASQ
-A PODNET-SVC-CVMJW3DXWMTNVZQK -m comment --comment "podnet default/web:80 -> 10.244.111.2:80" -m statistic --mode random --probability 0.50000000000 -j PODNET-SEP-VE5RFMLTNAVRUMEW
-A PODNET-SVC-CVMJW3DXWMTNVZQK -m comment --comment "podnet default/web:80 -> 10.244.42.2:80" -j PODNET-SEP-CTMWS25N2ZNCDL4E
-A PODNET-SVC-XUV7W7ZLOQBHCAEP ! -s 10.244.0.0/16 -d 10.96.0.5/32 -p tcp -m comment --comment "podnet default/aff:82 cluster IP" -m tcp --dport 82 -j PODNET-MARK-MASQ
-A PODNET-SVC-XUV7W7ZLOQBHCAEP -m comment --comment "podnet default/aff:82 -> 10.244.111.2:80" -m recent --rcheck --seconds 600 --reap --name PODNET-SEP-BOVTSX5CDQLDTHJZ --mask 255.255.255.255 --rsource -j PODNET-SEP-BOVTSX5CDQLDTHJZ
-A PODNET-SVC-XUV7W7ZLOQBHCAEP -m comment --comment "podnet default/aff:82 -> 10.244.42.2:80" -m recent --rcheck --seconds 600 --reap --name PODNET-SEP-DVUV2HCC64NEZLV7 --mask 255.255.255.255 --rsource -j PODNET-SEP-DVUV2HCC64NEZLV7
-A PODNET-SVC-XUV7W7ZLOQBHCAEP -m comment --comment "podnet default/aff:82 -> 10.244.111.2:80" -m statistic --mode random --probability 0.50000000000 -j PODNET-SEP-BOVTSX5CDQLDTHJZ
-A PODNET-SVC-XUV7W7ZLOQBHCAEP -m comment --comment "podnet default/aff:82 -> 10.244.42.2:80" -j PODNET-SEP-DVUV2HCC64NEZLV7
-A PODNET-SVC-YE4KRHUCMTARAWDF ! -s 10.244.0.0/16 -d 10.96.0.4/32 -p tcp -m comment --comment "podnet default/np:81 cluster IP" -m tcp --dport 81 -j PODNET-MARK-MASQ
-A PODNET-SVC-YE4KRHUCMTARAWDF -m comment --comment "podnet default/np:81 -> 10.244.111.2:80" -m statistic --mode random --probability 0.50000000000 -j PODNET-SEP-GVDEIPJWYNHFLYKR
-A PODNET-SVC-YE4KRHUCMTARAWDF -m comment --comment "podnet default/np:81 -> 10.244.42.2:80" -j PODNET-SEP-NPG43Q5DR4NIWTEL
COMMIT
`;

const A = '10.244.155.2';
const B = '10.244.51.2';
const N1_LOCAL = ['127.0.0.1', '192.168.200.1', '10.244.155.0', '10.244.155.1'];
const SERVICES = [
  { name: 'web', ip: '10.96.0.2', port: 80, proto: 'tcp' },
  { name: 'empty', ip: '10.96.0.3', port: 80, proto: 'tcp' },
  { name: 'np', ip: '10.96.0.4', port: 81, proto: 'tcp', nodePort: 30000 },
  { name: 'aff', ip: '10.96.0.5', port: 82, proto: 'tcp' },
  { name: 'loc', ip: '10.96.0.6', port: 83, proto: 'tcp', nodePort: 30001 },
];
const tcp = (src: string, dst: string, dport: number) => ({ family: 4 as const, src, dst, proto: 'tcp', sport: 40000, dport });

function run(tables: NfTable[], input: Omit<HookInput, 'local'> & { local?: string[] }, conntrack?: ConntrackEntry[]) {
  const full: HookInput = { local: N1_LOCAL, ...input };
  const outs = evaluateHook(tables, full);
  return { outs, pass: explainHook(outs, full, { ns: 'n1', services: SERVICES }, conntrack) };
}

const nft = () => tablesFromNftJson(N1);
/** the same ruleset with an element added to a set or map (what n2 or a later moment had) */
function withElem(set: string, elem: unknown): NfTable[] {
  const doc = JSON.parse(JSON.stringify(N1)) as { nftables: Record<string, { name?: string; elem?: unknown[] }>[] };
  const s = doc.nftables.find((o) => (o.map ?? o.set)?.name === set)!;
  const obj = (s.map ?? s.set)!;
  obj.elem = [...(obj.elem ?? []), elem];
  return tablesFromNftJson(doc);
}
/** a foreign table added to n1's ruleset (as `nft add table inet foreign` and chain/rules would) */
function withForeign(policy: 'drop' | 'accept', rules: unknown[][]): NfTable[] {
  const items: unknown[] = [
    { table: { family: 'inet', name: 'foreign', handle: 8 } },
    { chain: { family: 'inet', table: 'foreign', name: 'forward', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy } },
    ...rules.map((expr, i) => ({ rule: { family: 'inet', table: 'foreign', chain: 'forward', handle: i + 2, expr } })),
  ];
  return tablesFromNftJson({ nftables: [...N1.nftables, ...items] });
}

describe('trace netfilter: podnet-proxy (nftables)', () => {
  it('the ruleset is read: podnet tables, base chains with hook, priority and policy, sets', () => {
    const t = nft();
    assert.deepEqual(t.map((x) => `${x.family} ${x.name}`).sort(), ['inet podnet', 'inet podnet-cluster', 'inet podnet-proxy']);
    const proxy = t.find((x) => x.name === 'podnet-proxy')!;
    assert.deepEqual(proxy.chains.get('nat-prerouting')!.base, { type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' });
    assert.equal(proxy.chains.get('lb-2-int')!.rules.at(-1)!.ref.text, 'numgen random mod 2 vmap { 0 : goto pick-0, 1 : goto pick-1 }');
    assert.equal(proxy.sets.get('svc4')!.elem.length, 6);
  });

  it('pod a to service web: DNAT to a or b, 50% each, the first one followed; no masquerade mark', () => {
    const { outs, pass } = run(nft(), { hook: 'prerouting', pkt: tcp(A, '10.96.0.2', 80), iif: 'podnet0' });
    assert.deepEqual(outs.map((o) => [o.v, o.b.p, o.b.pkt.dst, o.b.pkt.dport]), [['accept', 0.5, A, 80], ['accept', 0.5, B, 80]]);
    assert.equal(pass.broken, false);
    assert.equal(pass.pkt.dst, A);
    assert.equal(pass.carry.mark, 0);
    const s = pass.steps[0];
    assert.equal(s.kind, 'netfilter');
    assert.match(s.text, /^prerouting: service web \(10\.96\.0\.2:80\/tcp\): DNAT to 10\.244\.155\.2:80 /);
    assert.match(s.text, /10\.244\.155\.2:80 50%, 10\.244\.51\.2:80 50%/);
    assert.match(s.text, /lb-2-int \(2 endpoints\)/);
    assert.deepEqual(s.object!.endpoints, [{ ip: A, port: 80, chance: 0.5 }, { ip: B, port: 80, chance: 0.5 }]);
    assert.deepEqual(s.object!.original, { dst: '10.96.0.2', dport: 80 });
    assert.equal(s.command, 'ip netns exec n1 nft -a list chain inet podnet-proxy pick-0');
  });

  it("the flow's conntrack entry picks the endpoint the walk follows", () => {
    const ct = parseConntrack(`tcp      6 117 ESTABLISHED src=${A} dst=10.96.0.2 sport=40000 dport=80 src=${B} dst=${A} sport=80 dport=40000 [ASSURED] mark=0 use=1\n`);
    assert.deepEqual(ct[0].reply, { src: B, dst: A, sport: 80, dport: 40000 });
    const { pass } = run(nft(), { hook: 'prerouting', pkt: tcp(A, '10.96.0.2', 80), iif: 'podnet0' }, ct);
    assert.equal(pass.pkt.dst, B);
    assert.match(pass.steps.at(-1)!.text, /^conntrack: this flow has an entry: tcp ESTABLISHED 10\.244\.155\.2:40000 -> 10\.96\.0\.2:80, replies from 10\.244\.51\.2:80 \(DNAT-ed\)/);
  });

  it('hairpin: pod a reaching itself through web is masqueraded in postrouting, and says why', () => {
    const pre = run(nft(), { hook: 'prerouting', pkt: tcp(A, '10.96.0.2', 80), iif: 'podnet0' }).pass;
    const post = run(nft(), { hook: 'postrouting', pkt: pre.pkt, carry: pre.carry, iif: 'podnet0', oif: 'podnet0', masqSrc: '10.244.155.1' }).pass;
    assert.equal(post.pkt.src, '10.244.155.1');
    assert.equal(post.carry.mark & 0x4000, 0, 'the bit is cleared before masquerade');
    assert.match(post.steps[0].text, /^postrouting: masqueraded: source 10\.244\.155\.2 -> 10\.244\.155\.1 by table inet podnet-proxy chain nat-postrouting rule handle \d+ \(hairpin/);
  });

  it('to endpoint b from pod a: not masqueraded (a pod source is inside the cluster networks)', () => {
    const pre = run(nft(), { hook: 'prerouting', pkt: tcp(A, '10.96.0.2', 80), iif: 'podnet0' }, parseConntrack(`tcp 6 1 SYN_SENT src=${A} dst=10.96.0.2 sport=40000 dport=80 src=${B} dst=${A} sport=80 dport=40000`)).pass;
    assert.equal(pre.pkt.dst, B);
    const post = run(nft(), { hook: 'postrouting', pkt: pre.pkt, carry: pre.carry, iif: 'podnet0', oif: 'podnet.1', masqSrc: '10.244.155.0' }).pass;
    assert.equal(post.pkt.src, A);
    assert.deepEqual(post.steps, []);
  });

  it('node n1 to web (output hook): marked because its source is outside the cluster networks, masqueraded', () => {
    const out = run(nft(), { hook: 'output', pkt: tcp('192.168.200.1', '10.96.0.2', 80) }).pass;
    assert.match(out.steps[0].text, /^output: service web .*masqueraded on the way out \(the source 192\.168\.200\.1 is outside the cluster networks\)/);
    assert.equal(out.carry.mark, 0x4000);
    const post = run(nft(), { hook: 'postrouting', pkt: out.pkt, carry: out.carry, oif: 'podnet0', masqSrc: '10.244.155.1' }).pass;
    assert.equal(post.pkt.src, '10.244.155.1');
    assert.match(post.steps[0].text, /the source 192\.168\.200\.1 is outside the cluster networks/);
  });

  it('a NodePort from another node: lb-2-all, always masqueraded', () => {
    const { pass } = run(nft(), { hook: 'prerouting', pkt: tcp('192.168.200.2', '192.168.200.1', 30000), iif: 'eth0' });
    assert.match(pass.steps[0].text, /^prerouting: NodePort 30000 of service np \(192\.168\.200\.1:30000\/tcp\): DNAT to 10\.244\.155\.2:80 .*lb-2-all.*always masqueraded/);
    assert.equal(pass.steps[0].object!.masquerade, 'always');
  });

  it('a service without endpoints: rejected with a TCP reset in prerouting, the broken step', () => {
    const { pass } = run(nft(), { hook: 'prerouting', pkt: tcp(A, '10.96.0.3', 80), iif: 'podnet0' });
    assert.equal(pass.broken, true);
    const s = pass.steps.at(-1)!;
    assert.equal(s.ok, false);
    assert.match(s.text, /^service empty \(10\.96\.0\.3:80\/tcp\) has no ready endpoints: rejected with a TCP reset \(table inet podnet-proxy chain reject-no-endpoints rule handle \d+\)$/);
    assert.equal(s.command, 'ip netns exec n1 nft -a list chain inet podnet-proxy reject-no-endpoints');
    // the frontend is TCP port 80: UDP to that address and port is no frontend at all
    const u = run(nft(), { hook: 'prerouting', pkt: { ...tcp(A, '10.96.0.3', 80), proto: 'udp' }, iif: 'podnet0' }).pass;
    assert.equal(u.broken, false);
    assert.deepEqual(u.steps, []);
  });

  it('a NodePort whose only endpoint is on another node, policy Local (n2 has it in noep4 as drop): dropped', () => {
    const t = withElem('noep4', [{ concat: ['192.168.200.1', 'tcp', 30002] }, { drop: null }]);
    const { pass } = run(t, { hook: 'prerouting', pkt: tcp('192.168.200.2', '192.168.200.1', 30002), iif: 'eth0' });
    assert.equal(pass.broken, true);
    assert.match(pass.steps.at(-1)!.text, /has no ready endpoint on this node and its traffic policy is Local: dropped/);
  });

  it('ClientIP affinity: the client with an entry in @aff4-0 is pinned to slot 0; another client gets both, 50% each', () => {
    const pinned = run(nft(), { hook: 'prerouting', pkt: tcp(A, '10.96.0.5', 82), iif: 'podnet0' });
    assert.deepEqual(pinned.outs.map((o) => [o.b.p, o.b.pkt.dst]), [[1, A]]);
    assert.match(pinned.pass.steps[0].text, /ClientIP affinity 600 s: this client is pinned by an entry in @aff4-0 \(expires in \d+ s\)/);
    const other = run(nft(), { hook: 'prerouting', pkt: tcp('10.244.155.9', '10.96.0.5', 82), iif: 'podnet0' });
    assert.deepEqual(other.outs.map((o) => [o.b.p, o.b.pkt.dst]), [[0.5, A], [0.5, B]]);
    assert.match(other.pass.steps[0].text, /no entry for this client yet, so one is picked at random and recorded in @aff4-<slot> for 600 s/);
    assert.ok(other.outs.every((o) => o.b.pins.some((p) => p.set === '@aff4-0' || p.set === '@aff4-1')), 'each way records the client in its slot set');
  });

  it('traffic that is no service frontend is left alone (no step); ICMP to a cluster IP too', () => {
    assert.deepEqual(run(nft(), { hook: 'prerouting', pkt: tcp(A, B, 8080), iif: 'podnet0' }).pass.steps, []);
    const icmp = run(nft(), { hook: 'prerouting', pkt: { family: 4, src: A, dst: '10.96.0.2', proto: 'icmp' }, iif: 'podnet0' });
    assert.deepEqual(icmp.pass.steps, []);
    assert.equal(icmp.pass.pkt.dst, '10.96.0.2');
  });

  it("the agent's masquerade of pod traffic leaving the cluster network (inet podnet-cluster)", () => {
    const { pass } = run(nft(), { hook: 'postrouting', pkt: tcp(A, '192.168.200.2', 30000), iif: 'podnet0', oif: 'eth0', masqSrc: '192.168.200.1' });
    assert.equal(pass.pkt.src, '192.168.200.1');
    assert.match(pass.steps[0].text, /by table inet podnet-cluster chain postrouting rule handle \d+ \(the agent's masquerade/);
  });

  it('the VXLAN packets are untracked (podnet-cluster notrack): no nat chain sees them, and no step says so', () => {
    const { outs, pass } = run(nft(), { hook: 'output', pkt: { family: 4, src: '192.168.200.1', dst: '192.168.200.2', proto: 'udp', sport: 40000, dport: 8472 } });
    assert.ok(outs[0].b.c.untracked);
    assert.deepEqual(pass.steps, []);
  });
});

describe('trace netfilter: foreign tables', () => {
  const fwd = { hook: 'forward' as const, pkt: tcp(A, B, 80), iif: 'podnet0', oif: 'podnet.1' };
  it("a base chain's policy drop at forward: dropped there, named with its table, chain, hook and command", () => {
    const { pass } = run(withForeign('drop', []), fwd);
    assert.equal(pass.broken, true);
    const s = pass.steps.at(-1)!;
    assert.equal(s.text, 'forward: dropped by the policy drop of foreign table inet foreign chain forward (hook forward priority 0)');
    assert.equal(s.command, 'ip netns exec n1 nft -a list chain inet foreign forward');
    assert.deepEqual(s.object!.base, { chain: 'forward', hook: 'forward', priority: 0, policy: 'drop' });
  });

  it('an unconditional drop rule in a policy-accept chain: dropped by that rule (handle)', () => {
    const { pass } = run(withForeign('accept', [[{ counter: { packets: 0, bytes: 0 } }, { drop: null }]]), fwd);
    assert.equal(pass.broken, true);
    assert.equal(pass.steps.at(-1)!.text, 'forward: dropped by foreign table inet foreign chain forward rule handle 2: counter drop (hook forward priority 0)');
  });

  it('rules as nft 1.0.6 prints them: ct state established,related / new + tcp flags syn accept; a masked flags match; iifname wildcard', () => {
    const rules = [
      [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } }, { accept: null }],
      [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } }, { match: { op: 'in', left: { payload: { protocol: 'tcp', field: 'flags' } }, right: 'syn' } }, { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'podnet*' } }, { accept: null }],
    ];
    const { pass } = run(withForeign('drop', rules), fwd);
    assert.equal(pass.broken, false);
    assert.match(pass.steps[0].text, /^forward: accepted by table inet foreign chain forward rule handle 3: ct state new tcp flags syn meta iifname podnet\* accept \(the chain's policy is drop\)$/);
    const masked = [[{ match: { op: '==', left: { '&': [{ payload: { protocol: 'tcp', field: 'flags' } }, ['fin', 'syn', 'rst', 'ack']] }, right: 'syn' } }, { drop: null }]];
    assert.equal(run(withForeign('accept', masked), fwd).pass.broken, true, 'a SYN matches tcp flags & (fin|syn|rst|ack) == syn');
    const other = [[{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'veth*' } }, { drop: null }]];
    assert.equal(run(withForeign('accept', other), fwd).pass.broken, false, 'podnet0 is no veth*');
  });

  it('a rule it cannot evaluate is "may match": reported as ok, taken as not matching', () => {
    const rules = [[{ match: { op: '==', left: { meta: { key: 'skuid' } }, right: 0 } }, { drop: null }]];
    const { pass } = run(withForeign('accept', rules), fwd);
    assert.equal(pass.broken, false);
    assert.equal(pass.steps.length, 1);
    assert.equal(pass.steps[0].ok, true);
    assert.match(pass.steps[0].text, /^forward: table inet foreign chain forward rule handle 2 may match \(cannot evaluate meta skuid for this packet\): meta skuid 0 drop; taken as not matching$/);
  });

  it('a numgen-mapped dnat (kube-proxy style) with 3 endpoints: a third each', () => {
    const t = tablesFromNftJson({ nftables: [
      { table: { family: 'ip', name: 'kp' } },
      { chain: { family: 'ip', table: 'kp', name: 'pre', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } },
      { rule: { family: 'ip', table: 'kp', chain: 'pre', handle: 2, expr: [
        { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '10.96.9.9' } },
        { dnat: { family: 'ip', addr: { map: { key: { numgen: { mode: 'random', mod: 3, offset: 0 } }, data: { set: [[0, '10.1.0.1'], [1, '10.1.0.2'], [2, '10.1.0.3']] } } }, port: 8080 } },
      ] } },
    ] });
    const { outs, pass } = run(t, { hook: 'prerouting', pkt: tcp(A, '10.96.9.9', 80), iif: 'podnet0' });
    assert.deepEqual(outs.map((o) => [o.b.pkt.dst, o.b.pkt.dport, Math.round(o.b.p * 1000)]), [['10.1.0.1', 8080, 333], ['10.1.0.2', 8080, 333], ['10.1.0.3', 8080, 333]]);
    assert.match(pass.steps[0].text, /DNAT to 10\.1\.0\.1:8080 .*10\.1\.0\.1:8080 33\.3%, 10\.1\.0\.2:8080 33\.3%, 10\.1\.0\.3:8080 33\.3%\) by table ip kp chain pre rule handle 2$/);
  });
});

describe('trace netfilter: podnet-proxy (iptables)', () => {
  const xt = () => tablesFromIptablesSave(N1_IPTABLES, 4, 'nft');
  const local = ['127.0.0.1', '192.168.135.1', '10.244.42.0', '10.244.42.1'];
  const XA = '10.244.42.2';
  const XB = '10.244.111.2';

  it('iptables-save is parsed: the nat and filter tables, policies, rules with their comments', () => {
    const t = xt();
    assert.deepEqual(t.map((x) => x.name), ['filter', 'nat']);
    const svc = t[1].chains.get('PODNET-SERVICES')!;
    assert.equal(svc.rules[0].ref.comment, 'podnet default/np:81 cluster IP');
    assert.deepEqual(t[0].chains.get('FORWARD')!.base, { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' });
    const r = parseXtRule(['!', '-s', '10.244.0.0/16', '-d', '10.96.0.2/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'PODNET-MARK-MASQ']);
    assert.deepEqual(r.clauses.map((c) => [c.name, c.neg, c.value]), [['-s', true, '10.244.0.0/16'], ['-d', false, '10.96.0.2/32'], ['-p', false, 'tcp'], ['tcp', false, undefined]]);
  });

  it('web: statistic 0.5 then the last SEP: both endpoints 50%, the first rule\'s followed', () => {
    const { outs, pass } = run(xt(), { hook: 'prerouting', pkt: tcp(XB, '10.96.0.2', 80), iif: 'podnet0', local });
    assert.deepEqual(outs.map((o) => [o.b.p, o.b.pkt.dst]), [[0.5, XB], [0.5, XA]]);
    assert.match(pass.steps[0].text, /^prerouting: service web \(10\.96\.0\.2:80\/tcp\): DNAT to 10\.244\.111\.2:80 .* 10\.244\.111\.2:80 50%, 10\.244\.42\.2:80 50%\) by iptables nat table chain PODNET-SEP-\w+ rule 2; PODNET-SERVICES -> PODNET-SVC-\w+/);
    assert.match(pass.steps[0].command!, /^ip netns exec n1 iptables-nft -t nat -L PODNET-SEP-\w+ -n -v --line-numbers$/);
  });

  it('empty: no DNAT in nat; rejected with a TCP reset by filter PODNET-SERVICES at forward', () => {
    assert.deepEqual(run(xt(), { hook: 'prerouting', pkt: tcp(XA, '10.96.0.3', 80), iif: 'podnet0', local }).pass.steps, []);
    const { pass } = run(xt(), { hook: 'forward', pkt: tcp(XA, '10.96.0.3', 80), iif: 'podnet0', oif: 'eth0', local });
    assert.equal(pass.broken, true);
    assert.match(pass.steps.at(-1)!.text, /^service empty \(10\.96\.0\.3:80\/tcp\) has no ready endpoints: rejected with a TCP reset \(iptables filter table chain PODNET-SERVICES rule 1\)$/);
  });

  it('a NodePort (addrtype LOCAL -> PODNET-NODEPORTS -> EXT): masqueraded by PODNET-POSTROUTING, as external traffic', () => {
    const pre = run(xt(), { hook: 'prerouting', pkt: tcp('192.168.135.2', '192.168.135.1', 30000), iif: 'eth0', local }).pass;
    assert.match(pre.steps[0].text, /NodePort 30000 of service np .*always masqueraded/);
    assert.equal(pre.carry.mark, 0x4000);
    const post = run(xt(), { hook: 'postrouting', pkt: pre.pkt, carry: pre.carry, iif: 'eth0', oif: 'podnet0', masqSrc: '10.244.42.1', local }).pass;
    assert.equal(post.pkt.src, '10.244.42.1');
    assert.equal(post.carry.mark, 0, '--set-xmark 0x4000/0x0 toggles the bit off');
    assert.match(post.steps[0].text, /^postrouting: masqueraded: source 192\.168\.135\.2 -> 10\.244\.42\.1 by iptables nat table chain PODNET-POSTROUTING rule 3/);
  });

  it('affinity by recent: a client on no list picks at random; one on a list may be pinned (a may-match)', () => {
    const sep = /--name (PODNET-SEP-\w+)/.exec(N1_IPTABLES.split('\n').find((l) => l.includes('default/aff:82 -> 10.244.111.2:80') && l.includes('--rcheck'))!)![1];
    const empty = new Map<string, string[] | undefined>();
    for (const l of N1_IPTABLES.matchAll(/--rcheck .*?--name (\S+)/g)) empty.set(l[1], []);
    const fresh = run(xt(), { hook: 'prerouting', pkt: tcp(XA, '10.96.0.5', 82), iif: 'podnet0', local, recent: empty });
    assert.deepEqual(fresh.outs.map((o) => o.b.p), [0.5, 0.5]);
    assert.equal(fresh.pass.steps.length, 1, 'no may-match when the lists are known not to hold the client');
    assert.match(fresh.pass.steps[0].text, /ClientIP affinity 600 s \(recent lists per endpoint\): this client is on none of them yet/);
    const seen = new Map(empty);
    seen.set(sep, [XA]);
    const again = run(xt(), { hook: 'prerouting', pkt: tcp(XA, '10.96.0.5', 82), iif: 'podnet0', local, recent: seen });
    assert.match(again.pass.steps[0].text, /may match \(cannot evaluate -m recent --rcheck --seconds 600/);
    assert.match(again.pass.steps.at(-1)!.text, new RegExp(`this client is on ${sep}, so it goes to that endpoint if it was seen within 600 s`));
  });

  it("a foreign iptables FORWARD policy DROP (as Docker sets it), with legacy iptables: dropped there, the legacy command named", () => {
    const legacy = `*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A DOCKER-USER -j RETURN\nCOMMIT\n`;
    const t = [...tablesFromIptablesSave(legacy, 4, 'legacy'), ...xt()];
    const { pass } = run(t, { hook: 'forward', pkt: tcp(XA, XB, 80), iif: 'podnet0', oif: 'podnet.1', local });
    assert.equal(pass.broken, true);
    const s = pass.steps.at(-1)!;
    assert.equal(s.text, 'forward: dropped by the policy drop of foreign table iptables-legacy filter chain FORWARD (hook forward priority 0)');
    assert.equal(s.command, 'ip netns exec n1 iptables-legacy -t filter -L FORWARD -n -v --line-numbers');
    // an established flow out of docker0 would be accepted: not this one (new, out on podnet.1)
    const toDocker = run(t, { hook: 'forward', pkt: tcp(XA, XB, 80), iif: 'podnet0', oif: 'docker0', local }).pass;
    assert.equal(toDocker.broken, true, 'a new flow is not RELATED,ESTABLISHED');
  });

  it("nft's JSON of the iptables-nft tables is left to iptables-save (xt matches nft cannot show)", () => {
    const doc = { nftables: [{ table: { family: 'ip', name: 'nat', handle: 5 } }, { table: { family: 'inet', name: 'podnet', handle: 9 } }] };
    assert.deepEqual(tablesFromNftJson(doc, isXtablesName).map((t) => t.name), ['podnet']);
  });
});

describe('trace netfilter: the live side through a view', () => {
  function view(over: Partial<TraceView>): TraceView {
    return {
      namespaces: () => ['n1'],
      role: () => 'node n1',
      fib: () => Promise.reject(new Error('no fib here')),
      links: async () => [],
      addresses: async () => N1_LOCAL.map((a) => ({ ifname: a.startsWith('192') ? 'eth0' : a.endsWith('.0') ? 'podnet.1' : a.startsWith('127') ? 'lo' : 'podnet0', family: 4 as const, address: a, prefixLen: 24, scope: a.startsWith('127') ? 'host' : 'global' })),
      neighbours: async () => [],
      fdb: async () => [],
      peerNs: async () => undefined,
      cluster: () => ({ networks: ['10.244.0.0/16'], subnets: [], services: SERVICES }),
      ...over,
    };
  }

  it('no ruleset method: no netfilter at all (the fixture views of the walk tests)', async () => {
    assert.equal(await traceHook(view({}), { ns: 'n1', hook: 'prerouting', pkt: tcp(A, '10.96.0.2', 80), iif: 'podnet0' }), undefined);
  });

  it('rulesets, conntrack and the masquerade source read through the view', async () => {
    const asked: string[] = [];
    const v = view({
      ruleset: async () => N1,
      iptables: async (_ns, fam, nftTables) => {
        asked.push(`xt ${fam} ${nftTables}`);
        return [];
      },
      conntrack: async (_ns, q) => {
        asked.push(`ct ${q.proto} ${q.src} ${q.dst} ${q.dport}`);
        return parseConntrack(`tcp 6 100 ESTABLISHED src=${A} dst=10.96.0.2 sport=40000 dport=80 src=${B} dst=${A} sport=80 dport=40000 [ASSURED] mark=0 use=1`);
      },
    });
    const pre = (await traceHook(v, { ns: 'n1', hook: 'prerouting', pkt: tcp(A, '10.96.0.2', 80), iif: 'podnet0' }))!;
    assert.deepEqual(asked, ['xt 4 false', `ct tcp ${A} 10.96.0.2 80`]);
    assert.equal(pre.pkt.dst, B, 'the conntrack entry decides which endpoint is followed');
    assert.equal(pre.steps.at(-1)!.command, `ip netns exec n1 conntrack -L -p tcp --orig-src ${A} --orig-dst 10.96.0.2 --dport 80`);
    // from the node: the masquerade source is the out device's address when the route gives none
    const out = (await traceHook(v, { ns: 'n1', hook: 'output', pkt: tcp('192.168.200.1', '10.96.0.2', 80) }))!;
    const post = (await traceHook(v, { ns: 'n1', hook: 'postrouting', pkt: { ...out.pkt, dst: B }, carry: out.carry, oif: 'podnet.1' }))!;
    assert.equal(post.pkt.src, '10.244.155.0');
  });
});
