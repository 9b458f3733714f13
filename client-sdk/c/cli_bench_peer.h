/* tidewire-cli bench --protocol tidewire|nats-ws|socketio (cli_bench_peer.c). */
#ifndef CLI_BENCH_PEER_H
#define CLI_BENCH_PEER_H

/* argv[0] == "bench", argv[1] the kind (fanout, publish, replay, conns). Returns an exit
 * code; the last line of stdout is the run's JSON. */
int cli_bench_peer(int argc, char **argv);

#endif
