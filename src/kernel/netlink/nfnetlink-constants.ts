// nfnetlink / nf_tables constants for set element operations, checked against the uapi headers
// (linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h, linux/netfilter.h, linux/netlink.h)
// of Debian 12 and Linux 6.3+ (NFT_MSG_DESTROYSETELEM), and against `nft --debug=mnl` output.

export const NETLINK_NETFILTER = 12;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
/** like SO_SNDBUF/SO_RCVBUF but not capped by net.core.{w,r}mem_max (needs CAP_NET_ADMIN) */
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const MSG_DONTWAIT = 0x40;
/** netlink ack TLV: u32 offset of the offending attribute from the start of the request's nlmsghdr */
export const NLMSGERR_ATTR_OFFS = 2;

// struct nfgenmsg { u8 nfgen_family; u8 version; __be16 res_id; }
export const NFGENMSG_LEN = 4;
export const NFNETLINK_V0 = 0;
export const NFNL_SUBSYS_NFTABLES = 10;
/** NLMSG_MIN_TYPE and NLMSG_MIN_TYPE + 1; res_id carries the subsystem */
export const NFNL_MSG_BATCH_BEGIN = 0x10;
export const NFNL_MSG_BATCH_END = 0x11;

// enum nfproto (linux/netfilter.h)
export const NFPROTO_UNSPEC = 0;
export const NFPROTO_INET = 1;
export const NFPROTO_IPV4 = 2;
export const NFPROTO_IPV6 = 10;

// enum nf_tables_msg_types
export const NFT_MSG_NEWSETELEM = 12;
export const NFT_MSG_GETSETELEM = 13;
export const NFT_MSG_DELSETELEM = 14;
/** Linux >= 6.3: like DELSETELEM, but a missing element is not an error */
export const NFT_MSG_DESTROYSETELEM = 30;
/** nlmsg_type of an nf_tables message */
export const nftMsgType = (msg: number): number => (NFNL_SUBSYS_NFTABLES << 8) | msg;

// enum nft_list_attributes
export const NFTA_LIST_ELEM = 1;

// enum nft_set_elem_list_attributes
export const NFTA_SET_ELEM_LIST_TABLE = 1;
export const NFTA_SET_ELEM_LIST_SET = 2;
export const NFTA_SET_ELEM_LIST_ELEMENTS = 3;

// enum nft_set_elem_attributes
export const NFTA_SET_ELEM_KEY = 1;
export const NFTA_SET_ELEM_DATA = 2;
export const NFTA_SET_ELEM_FLAGS = 3;
/** u64, big-endian, milliseconds */
export const NFTA_SET_ELEM_TIMEOUT = 4;
export const NFTA_SET_ELEM_EXPIRATION = 5;
export const NFTA_SET_ELEM_USERDATA = 6;

// enum nft_data_attributes
export const NFTA_DATA_VALUE = 1;
export const NFTA_DATA_VERDICT = 2;

// enum nft_verdict_attributes
export const NFTA_VERDICT_CODE = 1;
export const NFTA_VERDICT_CHAIN = 2;

// netfilter verdicts (NF_DROP, NF_ACCEPT) and enum nft_verdicts, sent as be32
export const NF_DROP = 0;
export const NF_ACCEPT = 1;
export const NFT_CONTINUE = -1;
export const NFT_BREAK = -2;
export const NFT_JUMP = -3;
export const NFT_GOTO = -4;
export const NFT_RETURN = -5;

/** largest value in a register set: 16 registers of 4 bytes (NFT_REG32_00..15) */
export const NFT_DATA_VALUE_MAXLEN = 64;
export const NFT_NAME_MAXLEN = 256;

// libnftnl udata (TLVs of { u8 type; u8 len; value }) of a set element
export const NFTNL_UDATA_SET_ELEM_COMMENT = 0;
export const NFTNL_UDATA_SET_ELEM_FLAGS = 1;
/** nft refuses longer comments ("comment too long, 128 characters maximum allowed") */
export const NFTNL_UDATA_COMMENT_MAXLEN = 128;
