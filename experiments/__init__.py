"""Config-driven runs, sweeps, reports, diagnostics and benchmarks built on rnncells."""
