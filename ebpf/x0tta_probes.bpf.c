// SPDX-License-Identifier: GPL-2.0
/*
 * x0tta flow probes and admission guard: tc clsact classifiers (direct action) for the mesh hard
 * interfaces and the batman-adv interface.
 *
 * Theory of operation. The same object is attached at ingress (x0tta_ingress) and egress
 * (x0tta_egress) of every probed interface. For each frame it:
 *
 *  - counts IPv4 and IPv6 frames per flow (interface, direction, 5-tuple) in `flows`, a per-CPU
 *    LRU hash whose size the loader sets from the config, so a scan or a flood evicts the oldest
 *    flows instead of failing; per-CPU, because this runs for every frame: each CPU adds to its
 *    own copy of the counters without atomics or a cache line bounced between CPUs, and the
 *    reader sums the copies;
 *  - counts batman-adv frames (ethertype 0x4305, ETH_P_BATMAN in uapi/linux/if_ether.h) per
 *    neighbour MAC (the source MAC when received, the destination MAC when sent) with the time it
 *    last received one: the MAPE-K monitor reads that as evidence of a link that went silent;
 *  - guards admission: a batman-adv frame received from a MAC that is not in `admitted` is dropped
 *    when `config.guard_mode` is GUARD_ENFORCE, or passed and counted as a would-be drop in
 *    GUARD_OBSERVE. batman-adv's packet handler (dev_add_pack(ETH_P_BATMAN)) runs after tc ingress,
 *    so a dropped frame never reaches it: the sender's OGMs and its originators stay unknown.
 *  - records, per originator, the sequence numbers of the OGMs (BATMAN_IV OGM, BATMAN_V OGM2) in
 *    the batman-adv frames it received and let pass, in `ogms`: batman-adv's netlink tables carry
 *    no sequence number, and a takeover of an originator is a second stream of them. Each entry
 *    keeps two streams (the newest seqno, when, from which neighbour on which interface, frames)
 *    and the count of OGMs that fit neither: a seqno that jumped out of a stream's window
 *    (margin behind, margin + rate per second since its last OGM ahead: the guard's seqno_margin
 *    and seqno_rate, from `config`) starts a new stream in place of the staler one. The guard's
 *    detector (seqno_takeover) judges them. A BATMAN_IV OGM at a TQ of at least OGM_CLAIM_TQ
 *    also leaves its neighbour, TTL, TQ and time in its originator's entry (the last such claim):
 *    every node that forwards an OGM takes its hop penalty off the TQ, so only an originator's own
 *    OGMs reach a neighbour at that quality, and a neighbour that sends them for an originator
 *    that is not its own claims a path without a hop (the guard's ogm_full_claim).
 *
 * No CO-RE: only struct __sk_buff fields (rewritten by the kernel's verifier, not by libbpf) and
 * direct packet access, so the object loads on kernels without BTF (the UML lab kernel, 6.1).
 * Timestamps are bpf_ktime_get_ns(), CLOCK_MONOTONIC: the same clock as Python's time.monotonic().
 *
 * The layouts of keys and values are mirrored in x0tta/probes/core.py; change both together.
 */
#include <linux/batadv_packet.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ETH_P_BATMAN 0x4305

#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Streams of an originator's OGM sequence numbers (see `ogms`), until the guard writes its own
 * seqno_margin and seqno_rate into `config`: the same values as their defaults
 * (x0tta/config/guard.py): batman-adv's own TQ window is 64, and an originator sends one OGM per
 * interval (1 s by default, 250 ms while heal probes a link). */
#define OGM_MARGIN 64
#define OGM_RATE 4
#define OGM_AGGREGATE_MAX 8 /* OGMs read per frame: batman-adv aggregates several in one */
#define NSEC_PER_SEC 1000000000ULL
/* The lowest TQ recorded as a claim: an OGM forwarded by a node with a hop penalty of 8 or more
 * (batman-adv's default is 30) carries at most 247; an originator's own OGMs carry 255. */
#define OGM_CLAIM_TQ 248

#define GUARD_OBSERVE 0
#define GUARD_ENFORCE 1

/* Indices of `stats` (a per-CPU array: exact counts without atomics). */
enum x0tta_stat {
	STAT_GUARD_DROPPED = 0,    /* batman-adv frames dropped by the guard (enforce) */
	STAT_GUARD_WOULD_DROP = 1, /* batman-adv frames from non-admitted MACs passed (observe) */
	STAT_TRUNCATED = 2,        /* IP frames too short for their headers */
	STAT_FLOW_UPDATE_ERR = 3,  /* could not insert a flow (map full of entries in use) */
	STAT_NEIGH_UPDATE_ERR = 4, /* could not insert a neighbour */
	STAT_NO_CONFIG = 5,        /* config map unreadable (never expected) */
	STAT_OGM_UPDATE_ERR = 6,   /* could not insert an originator into `ogms` */
	STAT_MAX = 7,
};

struct flow_key {
	__u32 ifindex;
	__u8 direction; /* DIR_INGRESS / DIR_EGRESS */
	__u8 family;    /* 4 or 6 */
	__u8 proto;     /* IPPROTO_* (IPv6: the first next-header) */
	__u8 pad;
	__u16 sport; /* network byte order; 0 unless TCP/UDP/SCTP/UDPLite */
	__u16 dport;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes, rest zero */
	__u8 daddr[16];
};

struct flow_value {
	__u64 packets;       /* segments: a GSO aggregate counts as its gso_segs */
	__u64 bytes;         /* L2 bytes of those segments (headers repeated per segment) */
	__u64 payload_bytes; /* L4 payload (after the TCP/UDP header; after the IP header otherwise) */
	__u64 first_seen_ns;
	__u64 last_seen_ns;
};

struct neigh_key {
	__u32 ifindex;
	__u8 mac[6];
	__u8 pad[2];
};

struct neigh_value {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 denied_packets; /* received while not admitted: dropped (enforce) or would-be (observe) */
	__u64 first_seen_ns;
	__u64 last_rx_ns; /* last batman-adv frame received from this MAC; 0 = never */
	__u64 last_tx_ns;
};

struct mac_key {
	__u8 mac[6];
};

struct ogm_stream {
	__u64 first_ns; /* its first OGM: the jump that started it, or the first OGM heard */
	__u64 last_ns;  /* 0: an empty slot */
	__u64 frames;       /* OGMs that belonged to it */
	__u32 first_seqno;  /* the seqno of its first OGM (host order) */
	__u32 seqno;        /* the newest */
	__u32 ifindex;      /* where its last OGM came in */
	__u8 neigh[6];      /* and from which neighbour (source MAC) */
	__u8 pad[6];
};

struct ogm_key {
	__u8 orig[6];
	__u8 pad[2];
};

struct ogm_value {
	struct ogm_stream stream[2];
	__u64 jumps;      /* OGMs out of both streams' windows: each started a new stream */
	__u8 packet_type; /* of the last OGM: BATADV_IV_OGM or BATADV_OGM2 */
	__u8 pad[7];
	/* the last BATMAN_IV OGM at a TQ of OGM_CLAIM_TQ or more; claim_ns 0: none */
	__u64 claim_ns;
	__u32 claim_ifindex;
	__u8 claim_neigh[6];
	__u8 claim_tq;
	__u8 claim_ttl;
	__u8 pad2[4];
};

struct x0tta_config {
	__u32 guard_mode;
	__u32 ogm_margin;         /* OGM streams (see `ogms`): the guard's seqno_margin; 0: OGM_MARGIN */
	__u64 ogm_ns_per_seqno;   /* 1e9 / the guard's seqno_rate; 0: 1e9 / OGM_RATE */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 8192); /* the loader sets the configured size */
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct neigh_key);
	__type(value, struct neigh_value);
} neighbors SEC(".maps");

/* Not per-CPU: the streams are compared across CPUs. A few hundred OGMs per second at most, so the
 * shared cache line costs nothing measurable; an originator flood evicts the stalest entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024); /* originators: far above an x0tta mesh, 184 KiB */
	__type(key, struct ogm_key);
	__type(value, struct ogm_value);
} ogms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct mac_key);
	__type(value, __u32); /* origin: 1 static (config), 2 dynamic (handshake) */
} admitted SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct x0tta_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &index);

	if (v)
		*v += 1;
}

static __always_inline __u32 segments(struct __sk_buff *skb)
{
	__u32 segs = skb->gso_segs;

	return segs ? segs : 1;
}

static __always_inline int count_neighbor(struct __sk_buff *skb, struct ethhdr *eth, int dir, __u64 now)
{
	struct neigh_key key = { .ifindex = skb->ifindex };
	struct neigh_value *v;
	__u64 segs = segments(skb);
	int denied = 0;

	__builtin_memcpy(key.mac, dir == DIR_INGRESS ? eth->h_source : eth->h_dest, 6);

	if (dir == DIR_INGRESS) {
		struct mac_key mk;
		__u32 zero = 0;
		struct x0tta_config *cfg;

		__builtin_memcpy(mk.mac, eth->h_source, 6);
		if (!bpf_map_lookup_elem(&admitted, &mk)) {
			cfg = bpf_map_lookup_elem(&config, &zero);
			if (!cfg)
				stat_inc(STAT_NO_CONFIG);
			denied = (cfg && cfg->guard_mode == GUARD_ENFORCE) ? 2 : 1;
		}
	}

	v = bpf_map_lookup_elem(&neighbors, &key);
	if (!v) {
		struct neigh_value init = { .first_seen_ns = now };

		bpf_map_update_elem(&neighbors, &key, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&neighbors, &key);
	}
	if (v) {
		if (dir == DIR_INGRESS) {
			__sync_fetch_and_add(&v->rx_packets, segs);
			__sync_fetch_and_add(&v->rx_bytes, skb->len);
			if (denied)
				__sync_fetch_and_add(&v->denied_packets, segs);
			v->last_rx_ns = now;
		} else {
			__sync_fetch_and_add(&v->tx_packets, segs);
			__sync_fetch_and_add(&v->tx_bytes, skb->len);
			v->last_tx_ns = now;
		}
	} else {
		stat_inc(STAT_NEIGH_UPDATE_ERR);
	}

	if (denied == 2) {
		stat_inc(STAT_GUARD_DROPPED);
		return TC_ACT_SHOT;
	}
	if (denied == 1)
		stat_inc(STAT_GUARD_WOULD_DROP);
	return TC_ACT_OK;
}

/* Does an OGM with `seqno`, at `now`, belong to stream `s`: at most OGM_MARGIN behind its newest
 * seqno (rebroadcasts and reordered copies), at most OGM_MARGIN + OGM_RATE per second since its
 * last OGM ahead of it (u32 serial arithmetic: the seqno wraps)? An empty slot takes nothing. */
struct ogm_window {
	__s64 margin;
	__u64 ns_per_seqno;
};

static __always_inline int ogm_fits(const struct ogm_stream *s, __u32 seqno, __u64 now, const struct ogm_window *w)
{
	__s64 d = (__s32)(seqno - s->seqno);
	__u64 since = now > s->last_ns ? now - s->last_ns : 0;

	return s->last_ns && d >= -w->margin && d <= w->margin + (__s64)(since / w->ns_per_seqno);
}

static __always_inline void ogm_claim(struct ogm_value *v, __u32 ifindex, const __u8 *neigh, __u8 tq, __u8 ttl,
				      __u64 now)
{
	v->claim_ns = now;
	v->claim_ifindex = ifindex;
	__builtin_memcpy(v->claim_neigh, neigh, 6);
	v->claim_tq = tq;
	v->claim_ttl = ttl;
}

/* `tq` is the OGM's TQ for BATMAN_IV, 0 for an OGM2 (which carries a throughput instead) */
static __always_inline void ogm_seen(__u32 ifindex, const __u8 *neigh, __u8 type, __u32 seqno, const __u8 *orig,
				     __u8 tq, __u8 ttl, __u64 now, const struct ogm_window *w)
{
	struct ogm_key key = {};
	struct ogm_value *v;
	struct ogm_stream *s;

	__builtin_memcpy(key.orig, orig, 6);
	v = bpf_map_lookup_elem(&ogms, &key);
	if (!v) {
		struct ogm_value init = {};

		init.stream[0].first_ns = now;
		init.stream[0].last_ns = now;
		init.stream[0].frames = 1;
		init.stream[0].first_seqno = seqno;
		init.stream[0].seqno = seqno;
		init.stream[0].ifindex = ifindex;
		__builtin_memcpy(init.stream[0].neigh, neigh, 6);
		init.packet_type = type;
		if (tq >= OGM_CLAIM_TQ)
			ogm_claim(&init, ifindex, neigh, tq, ttl, now);
		if (bpf_map_update_elem(&ogms, &key, &init, BPF_NOEXIST) == 0)
			return;
		v = bpf_map_lookup_elem(&ogms, &key); /* another CPU inserted it first */
		if (!v) {
			stat_inc(STAT_OGM_UPDATE_ERR);
			return;
		}
	}
	if (ogm_fits(&v->stream[0], seqno, now, w)) {
		s = &v->stream[0];
	} else if (ogm_fits(&v->stream[1], seqno, now, w)) {
		s = &v->stream[1];
	} else {
		/* out of both windows: a new stream in place of the staler one (an empty slot is stalest) */
		s = v->stream[1].last_ns < v->stream[0].last_ns ? &v->stream[1] : &v->stream[0];
		__sync_fetch_and_add(&v->jumps, 1);
		s->first_ns = now;
		s->frames = 0;
		s->first_seqno = seqno;
		s->seqno = seqno;
	}
	if ((__s32)(seqno - s->seqno) > 0)
		s->seqno = seqno;
	s->last_ns = now;
	s->ifindex = ifindex;
	__builtin_memcpy(s->neigh, neigh, 6);
	/* no atomic add: two CPUs on one originator's OGMs at once may lose one count, which the
	 * reader (two or more OGMs make a stream) never misses; it saves ~12 ns per frame of 3 OGMs */
	s->frames += 1;
	v->packet_type = type;
	if (tq >= OGM_CLAIM_TQ)
		ogm_claim(v, ifindex, neigh, tq, ttl, now);
}

/*
 * The OGMs of a batman-adv frame received from `neigh`: BATMAN_IV and BATMAN_V both aggregate
 * several OGMs in one frame, each header followed by its TVLVs. bpf_skb_load_bytes, as the offsets
 * are variable (see parse_l4). Anything else (unicast, broadcast, ELP, another protocol version)
 * is left at the first byte.
 */
static __always_inline void read_ogms(struct __sk_buff *skb, struct ethhdr *eth, __u64 now)
{
	struct ogm_window w = { OGM_MARGIN, NSEC_PER_SEC / OGM_RATE };
	struct x0tta_config *cfg;
	__u32 zero = 0;
	__u8 neigh[6];
	__u32 off = sizeof(*eth);
	int i;

	__builtin_memcpy(neigh, eth->h_source, 6);
	for (i = 0; i < OGM_AGGREGATE_MAX; i++) {
		struct batadv_ogm2_packet h; /* type, version, ttl, flags, seqno, orig: as in an IV OGM */
		__be16 tvlv;
		__u32 hlen;
		__u8 tail[4] = {}; /* an IV OGM's reserved, tq, tvlv_len */

		if (bpf_skb_load_bytes(skb, off, &h, sizeof(h)) < 0 || h.version != BATADV_COMPAT_VERSION)
			return;
		if (h.packet_type == BATADV_IV_OGM) {
			if (bpf_skb_load_bytes(skb, off + __builtin_offsetof(struct batadv_ogm_packet, reserved), tail,
					       sizeof(tail)) < 0)
				return;
			__builtin_memcpy(&tvlv, &tail[2], sizeof(tvlv));
			hlen = BATADV_OGM_HLEN;
		} else if (h.packet_type == BATADV_OGM2) {
			tvlv = h.tvlv_len;
			hlen = BATADV_OGM2_HLEN;
		} else {
			return;
		}
		if (i == 0) { /* the window, once per frame with OGMs: other frames do not pay for it */
			cfg = bpf_map_lookup_elem(&config, &zero);
			if (cfg && cfg->ogm_margin)
				w.margin = cfg->ogm_margin;
			if (cfg && cfg->ogm_ns_per_seqno)
				w.ns_per_seqno = cfg->ogm_ns_per_seqno;
		}
		ogm_seen(skb->ifindex, neigh, h.packet_type, bpf_ntohl(h.seqno), h.orig, tail[1], h.ttl, now, &w);
		off += hlen + bpf_ntohs(tvlv);
	}
}

static __always_inline void count_flow(struct __sk_buff *skb, struct flow_key *key, __u32 l2l3, __u32 l4hdr,
				       __u64 now)
{
	struct flow_value *v;
	__u64 segs = segments(skb);
	__u32 hdrs = l2l3 + l4hdr;
	__u64 payload = skb->len > hdrs ? skb->len - hdrs : 0;
	/* A GSO aggregate carries its headers once; on the wire each segment repeats them. */
	__u64 bytes = payload + segs * hdrs;

	if (segs == 1)
		bytes = skb->len;

	v = bpf_map_lookup_elem(&flows, key);
	if (!v) {
		struct flow_value init = {
			.packets = segs,
			.bytes = bytes,
			.payload_bytes = payload,
			.first_seen_ns = now,
			.last_seen_ns = now,
		};

		if (bpf_map_update_elem(&flows, key, &init, BPF_NOEXIST) == 0)
			return;
		v = bpf_map_lookup_elem(&flows, key); /* another CPU inserted it first */
		if (!v) {
			stat_inc(STAT_FLOW_UPDATE_ERR);
			return;
		}
	}
	/* this CPU's own copy of the value: no atomics, no cache line shared between CPUs */
	v->packets += segs;
	v->bytes += bytes;
	v->payload_bytes += payload;
	if (!v->first_seen_ns)
		v->first_seen_ns = now;
	v->last_seen_ns = now;
}

/* Protocols whose header starts with 16-bit source and destination ports. */
static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE || proto == IPPROTO_SCTP;
}

/* Length of the L4 header of a protocol with ports; `doff` is TCP's data offset byte (byte 12). */
static __always_inline __u32 l4_header_len(__u8 proto, __u8 doff)
{
	if (proto == IPPROTO_TCP)
		return (doff >> 4) * 4;
	return proto == IPPROTO_SCTP ? 12 : 8;
}

/*
 * The ports and the L4 header length (for the payload count) of a frame whose L4 header starts at
 * byte `off`; -1 if the frame is too short. For IPv4 headers with options only (parse_l4_direct
 * serves the rest). bpf_skb_load_bytes rather than direct access: the IPv4 header's length is
 * variable, and adding a variable to a packet pointer needs CAP_PERFMON (the
 * verifier's Spectre v1 sanitation refuses it otherwise); this way CAP_BPF + CAP_NET_ADMIN suffice.
 */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u8 proto, struct flow_key *key,
				    __u32 *l4hdr)
{
	__u16 ports[2];
	__u8 doff = 0;

	*l4hdr = 0;
	if (!has_ports(proto))
		return 0;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return -1;
	if (proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, off + 12, &doff, 1) < 0)
		return -1;
	key->sport = ports[0];
	key->dport = ports[1];
	*l4hdr = l4_header_len(proto, doff);
	return 0;
}

/*
 * The same as parse_l4 for an L4 header at a constant offset (IPv6, and IPv4 without options: all
 * but a rare frame), read straight from the packet: no helper calls on the common path.
 */
static __always_inline int parse_l4_direct(void *l4, void *data_end, __u8 proto, struct flow_key *key, __u32 *l4hdr)
{
	__u8 *b = l4;

	*l4hdr = 0;
	if (!has_ports(proto))
		return 0;
	/* constant bounds only: a computed one is pointer arithmetic the verifier refuses without
	 * CAP_PERFMON */
	if ((void *)(b + 4) > data_end)
		return -1;
	if (proto == IPPROTO_TCP && (void *)(b + 13) > data_end)
		return -1;
	__builtin_memcpy(&key->sport, b, 2);
	__builtin_memcpy(&key->dport, b + 2, 2);
	*l4hdr = l4_header_len(proto, proto == IPPROTO_TCP ? b[12] : 0);
	return 0;
}

static __always_inline int handle(struct __sk_buff *skb, int dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct flow_key key = {};
	__u64 now;
	__u16 proto;
	__u32 l4hdr;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	proto = bpf_ntohs(eth->h_proto);

	if (proto == ETH_P_BATMAN) {
		int verdict = count_neighbor(skb, eth, dir, now);

		/* what batman-adv takes in: received, and not dropped by the guard */
		if (dir == DIR_INGRESS && verdict == TC_ACT_OK)
			read_ogms(skb, eth, now);
		return verdict;
	}

	key.ifindex = skb->ifindex;
	key.direction = dir;
	if (proto == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 ihl;

		if ((void *)(ip + 1) > data_end) {
			stat_inc(STAT_TRUNCATED);
			return TC_ACT_OK;
		}
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip)) {
			stat_inc(STAT_TRUNCATED);
			return TC_ACT_OK;
		}
		key.family = 4;
		key.proto = ip->protocol;
		__builtin_memcpy(key.saddr, &ip->saddr, 4);
		__builtin_memcpy(key.daddr, &ip->daddr, 4);
		/* Ports only in the first fragment. */
		if (!(ip->frag_off & bpf_htons(0x1fff))) {
			int bad = ihl == sizeof(*ip) ? parse_l4_direct(ip + 1, data_end, key.proto, &key, &l4hdr)
						     : parse_l4(skb, sizeof(*eth) + ihl, key.proto, &key, &l4hdr);

			if (bad < 0) {
				stat_inc(STAT_TRUNCATED);
				return TC_ACT_OK;
			}
		} else {
			l4hdr = 0;
		}
		count_flow(skb, &key, sizeof(*eth) + ihl, l4hdr, now);
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end) {
			stat_inc(STAT_TRUNCATED);
			return TC_ACT_OK;
		}
		key.family = 6;
		key.proto = ip6->nexthdr;
		__builtin_memcpy(key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(key.daddr, &ip6->daddr, 16);
		if (parse_l4_direct(ip6 + 1, data_end, key.proto, &key, &l4hdr) < 0) {
			stat_inc(STAT_TRUNCATED);
			return TC_ACT_OK;
		}
		count_flow(skb, &key, sizeof(*eth) + sizeof(*ip6), l4hdr, now);
	}
	return TC_ACT_OK;
}

SEC("tc")
int x0tta_ingress(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

SEC("tc")
int x0tta_egress(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

char _license[] SEC("license") = "GPL";
