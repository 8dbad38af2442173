#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* fopencookie */
#endif
#include <stdio.h>
#include "wrapper.h"

static tenet_log_sink log_sink;

static ssize_t log_write(void *cookie, const char *buf, size_t size)
{
	(void)cookie;
	log_sink(rte_log_cur_msg_loglevel(), buf, size);
	return (ssize_t)size;
}

int tenet_log_to(tenet_log_sink sink)
{
	cookie_io_functions_t io = { .write = log_write };
	FILE *stream;

	log_sink = sink;
	stream = fopencookie(NULL, "w", io);
	if (stream == NULL)
		return -1;
	/* One write per line, each with the level of the message it ends. */
	setvbuf(stream, NULL, _IOLBF, 0);
	return rte_openlog_stream(stream);
}

uint16_t tenet_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, pkts, nb_pkts);
}

uint16_t tenet_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, pkts, nb_pkts);
}

int tenet_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(pool, mbufs, count);
}

void tenet_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

unsigned int tenet_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n)
{
	return rte_ring_sp_enqueue_burst(r, objs, n, NULL);
}

unsigned int tenet_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n)
{
	return rte_ring_sc_dequeue_burst(r, objs, n, NULL);
}

unsigned int tenet_ring_count(const struct rte_ring *r)
{
	return rte_ring_count(r);
}

unsigned int tenet_mempool_avail_count(const struct rte_mempool *pool)
{
	return rte_mempool_avail_count(pool);
}

uint16_t tenet_pktmbuf_data_room_size(struct rte_mempool *pool)
{
	return rte_pktmbuf_data_room_size(pool);
}

uint16_t tenet_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value)
{
	return rte_mbuf_refcnt_update(m, value);
}

int tenet_errno(void)
{
	return rte_errno;
}

unsigned int tenet_lcore_id(void)
{
	return rte_lcore_id();
}
