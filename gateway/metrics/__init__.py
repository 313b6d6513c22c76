"""What the gateway measures and how it is exported.

    hot path ── RequestStats.record() (plain in-process counters, gateway/stats.py)
                  │
                  ├── /metrics?format=prometheus   exposition.py: one custom Collector per scrape;
                  │                                under --workers each process writes its totals
                  │                                into prometheus_client's multiprocess files
                  │                                (multiproc.py) and the scrape merges them
                  └── /metrics (JSON)              cluster.py: each replica publishes a snapshot
                                                   into Redis; the JSON view sums the live ones

Nothing here runs per request except `LatencyHistogram.observe`: the cost of a prometheus_client
metric update (a lock and, in multiprocess mode, an mmap write) is paid once per flush instead.
"""
