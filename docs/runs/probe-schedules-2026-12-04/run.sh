#!/bin/bash
# waits for bench schedule's second case (fraction 1, one_queue), stops it, then runs the main job before/after
cd /work/main
while [ "$(grep -c '  utilisation' /work/bench-schedule-full.log)" -lt 2 ]; do
  grep -q '^EXIT' /work/bench-schedule-full.log && break; sleep 10; done
pid=$(pgrep -f "rnnray.bench schedule" | head -1)
[ -n "$pid" ] && kill -INT $pid
for i in $(seq 60); do pgrep -f "rnnray.bench schedule" >/dev/null || break; sleep 5; done
pkill -9 -f "rnnray.bench schedule"; sleep 5
.venv/bin/ray stop --force > /work/pt4/raystop.log 2>&1; sleep 10
echo "bench stopped $(date)" > /work/pt4/status
export RAY_AUTH_MODE=disabled
/usr/bin/time -v .venv/bin/python -m rnnray.sweep sweeps/probe.yaml --set name=probe-per_encoder --set tune.schedule=per_encoder > /work/pt4/before.out 2> /work/pt4/before.err
echo "before EXIT $? $(date)" >> /work/pt4/status
sleep 20
/usr/bin/time -v .venv/bin/python -m rnnray.sweep sweeps/probe.yaml > /work/pt4/after.out 2> /work/pt4/after.err
echo "after EXIT $? $(date)" >> /work/pt4/status
