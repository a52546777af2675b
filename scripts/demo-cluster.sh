# Sourced by `scripts/demo --cluster` once pimgate is built and demo/cert.pem and the secrets exist:
# three nats-servers (a JetStream cluster, the log's stream with 3 replicas), three pimgate nodes
# on it and haproxy in front of them, all on loopback, all in demo/cluster/. Sends three signed
# legacy requests through haproxy (round robin: each to another node) and shows that node 1's
# jsonl-sink plugin receives all three events (the other nodes take webhooks only; node 1 sees
# their events as they arrive). Keeps serving until Ctrl-C; `--check` exits after the requests.
# Idempotent: the configurations are written anew at every start; the servers' stores and the
# nodes' replicas in demo/cluster/ are kept (delete the folder to start from an empty log).

CLUSTER="$DEMO/cluster"
mkdir -p "$CLUSTER"
NATS_PORTS=(14221 14222 14223)    # clients
ROUTE_PORTS=(16221 16222 16223)   # cluster routes
GATEWAY_PORTS=(18441 18442 18443)
METRICS_PORTS=(19461 19462 19463)
ADMIN_PORTS=(17071 17072 17073)
PIDS=()
stop_cluster() {
  local pid
  # pimgate first (it drains its log), then the balancer and the servers.
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_cluster EXIT
trap 'exit 0' INT TERM

for port in "$PORT" "${NATS_PORTS[@]}" "${ROUTE_PORTS[@]}" "${GATEWAY_PORTS[@]}" \
            "${METRICS_PORTS[@]}" "${ADMIN_PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use (another demo still running? Ctrl-C stops it)" >&2
    exit 1
  fi
done

routes=""
for i in 0 1 2; do routes+=$'\n    '"\"nats-route://127.0.0.1:${ROUTE_PORTS[$i]}\""; done
for i in 0 1 2; do
  n=$((i + 1))
  cat > "$CLUSTER/nats-$n.conf" <<CONF
server_name: "n$n"
listen: "127.0.0.1:${NATS_PORTS[$i]}"
jetstream { store_dir: "$CLUSTER/nats-$n" }
cluster {
  name: "pimgate-demo"
  listen: "127.0.0.1:${ROUTE_PORTS[$i]}"
  routes: [$routes
  ]
}
CONF
  nats-server -c "$CLUSTER/nats-$n.conf" >>"$CLUSTER/nats-$n.log" 2>&1 &
  PIDS+=($!)
done
log "three nats-servers on 127.0.0.1:${NATS_PORTS[0]}-${NATS_PORTS[2]} (logs: $CLUSTER/nats-*.log)"

servers="\"nats://127.0.0.1:${NATS_PORTS[0]}\", \"nats://127.0.0.1:${NATS_PORTS[1]}\", \"nats://127.0.0.1:${NATS_PORTS[2]}\""
for i in 0 1 2; do
  n=$((i + 1))
  {
    cat <<YAML
# Written by scripts/demo --cluster at every start: edits here are lost.
gateway:
  listen: 127.0.0.1:${GATEWAY_PORTS[$i]}
  tls:
    cert_file: $DEMO/cert.pem
    key_file: $DEMO/key.pem
  max_connections_per_client: 10000   # behind haproxy every connection comes from 127.0.0.1
store:
  backend: jetstream
  path: $CLUSTER/replica-$n
  jetstream:
    servers: [$servers]
    replicas: 3
metrics:
  listen: 127.0.0.1:${METRICS_PORTS[$i]}
admin:
  listen: 127.0.0.1:${ADMIN_PORTS[$i]}
sources:
  - name: akeneo-legacy
    kind: events_api
    path: /hooks/akeneo/events-api
    secret: file:$DEMO/legacy.secret
  - name: akeneo-platform
    kind: event_platform
    path: /hooks/akeneo/event-platform
    secret: file:$DEMO/platform.secret
YAML
    if [ "$n" = 1 ]; then
      cat <<YAML
# The plugin on node 1 only, so that one file shows every event: node 1 then holds all of its
# partitions. In production every node runs the same plugins and shares the partitions
# (docs/scale-out.md, "Dispatch to plugins").
plugins:
  - name: jsonl-sink
    command: [$PIMGATE_ROOT/build/plugins/jsonl-sink/pimgate-jsonl-sink]
    env:
      JSONL_SINK_PATH: $CLUSTER/events.jsonl
    events: ["product.*", "product_model.*"]
YAML
    else
      echo "plugins: []   # ingest only"
    fi
  } > "$CLUSTER/pimgate-$n.yaml"
done

# The cluster answers once it has elected a meta leader: --check-config says so.
answered=0
for _ in $(seq 1 120); do
  if ./build/bin/pimgate --check-config "$CLUSTER/pimgate-1.yaml" >/dev/null 2>&1; then
    answered=1
    break
  fi
  sleep 0.5
done
if [ "$answered" = 0 ]; then
  ./build/bin/pimgate --check-config "$CLUSTER/pimgate-1.yaml" || true
  echo "the nats-servers did not answer; their logs:" >&2
  tail -5 "$CLUSTER"/nats-*.log >&2
  exit 1
fi
for n in 1 2 3; do
  rm -f "$CLUSTER/ready-$n.json"
  ./build/bin/pimgate --config "$CLUSTER/pimgate-$n.yaml" --ready-file "$CLUSTER/ready-$n.json" \
    >>"$CLUSTER/pimgate-$n.log" 2>&1 &
  PIDS+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 1 1500); do
    [ -f "$CLUSTER/ready-$n.json" ] && break
    sleep 0.02
  done
  [ -f "$CLUSTER/ready-$n.json" ] || {
    echo "pimgate node $n did not start; its log:" >&2
    tail -20 "$CLUSTER/pimgate-$n.log" >&2
    exit 1
  }
done
log "three pimgate nodes on 127.0.0.1:${GATEWAY_PORTS[0]}-${GATEWAY_PORTS[2]} (logs: $CLUSTER/pimgate-*.log)"

cat > "$CLUSTER/haproxy.cfg" <<CFG
# Written by scripts/demo --cluster at every start. TLS passes through to pimgate.
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch 1
frontend webhooks
  bind 127.0.0.1:$PORT
  default_backend pimgate
backend pimgate
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fall 2 rise 1
  server node1 127.0.0.1:${GATEWAY_PORTS[0]} check port ${METRICS_PORTS[0]}
  server node2 127.0.0.1:${GATEWAY_PORTS[1]} check port ${METRICS_PORTS[1]}
  server node3 127.0.0.1:${GATEWAY_PORTS[2]} check port ${METRICS_PORTS[2]}
CFG
haproxy -c -q -f "$CLUSTER/haproxy.cfg"
haproxy -db -f "$CLUSTER/haproxy.cfg" >>"$CLUSTER/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 500); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.02
done
# Until haproxy's health checks have seen every node, a request may find fewer: wait for them.
sleep 1.5

post_legacy() {
  local secret="$1" body="$2" ts sig
  ts=$(date +%s)
  sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
  curl -sS --cacert "$DEMO/cert.pem" -w ' -> HTTP %{http_code}\n' \
    -H 'Content-Type: application/json' \
    -H "X-Akeneo-Request-Timestamp: $ts" -H "X-Akeneo-Request-Signature: $sig" \
    --data-binary "$body" "https://localhost:$PORT/hooks/akeneo/events-api"
}
IDS=()
for n in 1 2 3; do
  id=$(cat /proc/sys/kernel/random/uuid)
  IDS+=("$id")
  now=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
  body='{"events":[{"action":"product.updated","event_id":"'$id'","event_datetime":"'$now'","author":"julia","author_type":"ui","pim_source":"https:\/\/pim.example.com","data":{"resource":{"uuid":"a3f2c1d4-0000-4000-8000-00000000000'$n'","identifier":"sku-'$n'","family":"shoes","enabled":true,"updated":"'$now'"}}}]}'
  log "signed legacy request $n through haproxy"
  post_legacy "$(cat "$DEMO/legacy.secret")" "$body"
done
log "node 1's jsonl-sink plugin received the three events, whichever node took them"
for id in "${IDS[@]}"; do
  for _ in $(seq 1 300); do
    grep -q "$id" "$CLUSTER/events.jsonl" 2>/dev/null && break
    sleep 0.1
  done
  grep -c "$id" "$CLUSTER/events.jsonl" >/dev/null || { echo "event $id did not reach the plugin" >&2; exit 1; }
  echo "  $id: delivered"
done

cat <<INFO

A three-node pimgate cluster is serving https://localhost:$PORT through haproxy
(self-signed certificate: $DEMO/cert.pem)
  Events API webhook URL:     https://<your-host>:$PORT/hooks/akeneo/events-api
  Event Platform webhook URL: https://<your-host>:$PORT/hooks/akeneo/event-platform
  nodes: https://127.0.0.1:${GATEWAY_PORTS[0]}, :${GATEWAY_PORTS[1]}, :${GATEWAY_PORTS[2]}
         (/readyz on :${METRICS_PORTS[0]}, :${METRICS_PORTS[1]}, :${METRICS_PORTS[2]};
          pimgatectl --admin 127.0.0.1:${ADMIN_PORTS[0]} ...)
  NATS JetStream: nats://127.0.0.1:${NATS_PORTS[0]}, :${NATS_PORTS[1]}, :${NATS_PORTS[2]}
  everything (configs, logs, stores, events.jsonl): $CLUSTER
  Try: kill -9 one node or one nats-server; requests through haproxy keep being answered 200.
  See docs/scale-out.md.
INFO
if [ "${CLUSTER_CHECK:-}" = 1 ]; then
  exit 0
fi
echo "Press Ctrl-C to stop."
wait "${PIDS[@]}"
