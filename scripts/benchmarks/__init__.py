"""The benchmarks and the GPU check: one harness, each benchmark's configurations in one table."""
