"""Benchmarks: ggufd over HTTP against a plain llama.cpp decode loop, in one run."""
