// rtnetlink constants, checked against the uapi headers (linux/netlink.h, linux/rtnetlink.h,
// linux/if_link.h, linux/if_addr.h, linux/veth.h, linux/if.h) of Debian 12 and the running kernel.

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const SOL_SOCKET = 1;
export const SO_RCVTIMEO = 20; // x86_64/arm64 (SO_RCVTIMEO_OLD), struct timeval
export const SOL_NETLINK = 270;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const CLONE_NEWNET = 0x40000000;

// struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x01;
export const NLM_F_MULTI = 0x02;
export const NLM_F_ACK = 0x04;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** on NLMSG_ERROR: the request was not echoed (NETLINK_CAP_ACK) / extended ack TLVs follow */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_NEWROUTE = 24;

// struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change; } = 16 bytes
export const IFINFOMSG_LEN = 16;
// struct ifaddrmsg { u8 family; u8 prefixlen; u8 flags; u8 scope; u32 index; } = 8 bytes
export const IFADDRMSG_LEN = 8;
// struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags; } = 12 bytes
export const RTMSG_LEN = 12;

export const IFF_UP = 0x1;

// enum IFLA_*
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_MASTER = 10;
export const IFLA_LINKINFO = 18;
export const IFLA_NET_NS_FD = 28;
export const IFLA_EXT_MASK = 29;
// enum IFLA_INFO_*
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
// enum VETH_INFO_*
export const VETH_INFO_PEER = 1;

// enum IFA_*
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;

// enum RTA_*
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;

export const RT_TABLE_MAIN = 254;
export const RTPROT_BOOT = 3;
export const RT_SCOPE_UNIVERSE = 0;
export const RTN_UNICAST = 1;

export const NLA_HDRLEN = 4;
export const NLA_F_NESTED = 0x8000;
export const NLA_TYPE_MASK = 0x3fff; // ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
