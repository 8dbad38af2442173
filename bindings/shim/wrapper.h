/* What tenet binds from DPDK 22.11. Kept narrow: build.rs allowlists by name. */
#include <rte_config.h>
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_net.h>
#include <rte_vhost.h>
#include <rte_eth_bond.h>
#include <rte_log.h>

/* Offload flags and capabilities are RTE_BIT64() macros, which bindgen cannot expand;
 * as constants they reach Rust with DPDK's own values. */
static const uint64_t TENET_MBUF_F_RX_LRO = RTE_MBUF_F_RX_LRO;
static const uint64_t TENET_MBUF_F_RX_L4_CKSUM_MASK = RTE_MBUF_F_RX_L4_CKSUM_MASK;
static const uint64_t TENET_MBUF_F_RX_L4_CKSUM_NONE = RTE_MBUF_F_RX_L4_CKSUM_NONE;
static const uint64_t TENET_MBUF_F_RX_L4_CKSUM_GOOD = RTE_MBUF_F_RX_L4_CKSUM_GOOD;
static const uint64_t TENET_MBUF_F_TX_TCP_SEG = RTE_MBUF_F_TX_TCP_SEG;
static const uint64_t TENET_MBUF_F_TX_TCP_CKSUM = RTE_MBUF_F_TX_TCP_CKSUM;
static const uint64_t TENET_MBUF_F_TX_UDP_CKSUM = RTE_MBUF_F_TX_UDP_CKSUM;
static const uint64_t TENET_MBUF_F_TX_IP_CKSUM = RTE_MBUF_F_TX_IP_CKSUM;
static const uint64_t TENET_MBUF_F_TX_IPV4 = RTE_MBUF_F_TX_IPV4;
static const uint64_t TENET_MBUF_F_TX_IPV6 = RTE_MBUF_F_TX_IPV6;
static const uint64_t TENET_ETH_RX_OFFLOAD_TCP_CKSUM = RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
static const uint64_t TENET_ETH_RX_OFFLOAD_UDP_CKSUM = RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
static const uint64_t TENET_ETH_RX_OFFLOAD_TCP_LRO = RTE_ETH_RX_OFFLOAD_TCP_LRO;
static const uint64_t TENET_ETH_TX_OFFLOAD_TCP_TSO = RTE_ETH_TX_OFFLOAD_TCP_TSO;
static const uint64_t TENET_ETH_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
static const uint64_t TENET_ETH_TX_OFFLOAD_UDP_CKSUM = RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
static const uint64_t TENET_ETH_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
static const uint64_t TENET_ETH_TX_OFFLOAD_MULTI_SEGS = RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
static const uint64_t TENET_ETH_RSS_IP = RTE_ETH_RSS_IP;
static const uint64_t TENET_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
static const uint64_t TENET_ETH_RSS_UDP = RTE_ETH_RSS_UDP;

/* DPDK's fast path is static inline and has no symbol; shim.c exports it.
 * Every call here is made once per burst, never once per packet. */
uint16_t tenet_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts);
uint16_t tenet_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts);
int tenet_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned int count);
void tenet_pktmbuf_free(struct rte_mbuf *m);
unsigned int tenet_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int tenet_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int tenet_ring_count(const struct rte_ring *r);
unsigned int tenet_mempool_avail_count(const struct rte_mempool *pool);
uint16_t tenet_pktmbuf_data_room_size(struct rte_mempool *pool);
uint16_t tenet_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);
int tenet_errno(void);
unsigned int tenet_lcore_id(void);

/* DPDK's log lines, handed to `sink` with the message's level (RTE_LOG_*). */
typedef void (*tenet_log_sink)(int level, const char *bytes, size_t len);
int tenet_log_to(tenet_log_sink sink);
