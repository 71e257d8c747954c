"""live_wsgi benchmarks: ratios against a plain generator app, in one run."""
