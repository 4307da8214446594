// `leasetrain bench gemm` and `bench attention`: the hand-written CUDA kernels timed on this
// machine's GPU (benchmarks/cuda), with a table for people and --json for scripts. Without a
// usable GPU (or in a build without CUDA) each prints one line saying so and exits 1.
#pragma once
#include <CLI/CLI.hpp>

namespace lt::cli {

// Registers `gemm` and `attention` under the `bench` subcommand (cmd_bench.cpp calls it).
void add_gpu_bench_commands(CLI::App* bench);

}  // namespace lt::cli
