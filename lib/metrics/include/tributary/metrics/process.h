#pragma once

#include "tributary/metrics/metrics.h"

namespace tributary::metrics {

/// The Prometheus client's process_* metrics (CPU seconds, resident memory, open fds, start
/// time), read from /proc at every scrape.
void addProcessMetrics(Registry& registry);

}  // namespace tributary::metrics
