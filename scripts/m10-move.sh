#!/usr/bin/env bash
# One-off (M10): moves files into the module layout and rewrites include paths. Run from the
# repository root on a clean tree; idempotent on files already moved.
set -euo pipefail
mv_file() {  # mv_file FROM TO
  [ -e "$1" ] || return 0
  mkdir -p "$(dirname "$2")"
  git mv "$1" "$2"
  printf 's#"%s"#"%s"#g\n' "$1" "$2" >> /tmp/m10-includes.sed
}
: > /tmp/m10-includes.sed
for f in event_log.h event_log.cc log_backend.h rocksdb_backend.h rocksdb_backend.cc retention.h retention.cc; do
  mv_file core/$f core/log/$f
done
for f in dispatcher delivery_stream event_filter event_wire plugin_supervisor; do
  mv_file core/$f.h core/dispatch/$f.h; mv_file core/$f.cc core/dispatch/$f.cc
done
for f in akeneo_client reconciler hydrator; do
  mv_file core/$f.h pim/$f.h; mv_file core/$f.cc pim/$f.cc
done
mv_file core/config.h config/config.h; mv_file core/config.cc config/config.cc
for f in metrics metrics_collectors; do
  mv_file core/$f.h metrics/$f.h; mv_file core/$f.cc metrics/$f.cc
done
for f in logging did_you_mean; do
  mv_file core/$f.h common/$f.h; mv_file core/$f.cc common/$f.cc
done
mv_file core/event_type.h gateway/event_type.h; mv_file core/event_type.cc gateway/event_type.cc
mv_file app/pimgatectl.cc ctl/pimgatectl.cc
# Tests mirror the tree.
for f in event_log bulk_load retention; do mv_file tests/core/${f}_test.cc tests/core/log/${f}_test.cc; done
for f in dispatcher event_filter plugin_supervisor; do
  mv_file tests/core/${f}_test.cc tests/core/dispatch/${f}_test.cc
done
for f in akeneo_client reconciler hydration; do mv_file tests/core/${f}_test.cc tests/pim/${f}_test.cc; done
mv_file tests/core/config_test.cc tests/config/config_test.cc
mv_file tests/core/event_type_test.cc tests/gateway/event_type_test.cc
for f in pimgatectl reconcile_cli; do mv_file tests/admin/${f}_test.cc tests/ctl/${f}_test.cc; done
git ls-files -z -- '*.cc' '*.h' '*.cpp' '*.md' '*.txt' '*.cmake' '*.py' '*.sh' 'scripts/*' |
  xargs -0 sed -i -f /tmp/m10-includes.sed
# Header guards follow the path: core/log/event_log.h -> PIMGATE_CORE_LOG_EVENT_LOG_H_.
while read -r line; do
  to=$(echo "$line" | sed -E 's|s#"([^"]+)"#"([^"]+)"#g|\2|')
  case "$to" in *.h) ;; *) continue ;; esac
  [ -f "$to" ] || continue
  guard=$(echo "PIMGATE_${to%.h}_H_" | tr 'a-z/.-' 'A-Z___')
  old=$(grep -m1 -oE '^#ifndef [A-Z0-9_]+_H_' "$to" | cut -d' ' -f2 || true)
  [ -n "$old" ] && [ "$old" != "$guard" ] && sed -i "s/\b$old\b/$guard/g" "$to"
done < /tmp/m10-includes.sed
