// leasetrain: the command-line entry point. Bad input of any kind ends in one line on stderr
// and exit code 2; --help on every subcommand explains it.
#include <sys/resource.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <string>

#include "launcher/commands.h"
#include "runtime/error.h"

namespace {

// An error is one line: names taken from files and arguments (a token "x\ny", a path with a
// newline) are printed with their control characters escaped, whichever reader quoted them.
std::string one_line(const char* what) {
  std::string out;
  for (const char* c = what; *c; ++c) {
    const unsigned char b = (unsigned char)*c;
    if (b == '\n') out += "\\n";
    else if (b == '\r') out += "\\r";
    else if ((b < 0x20 && b != '\t') || b == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", b);
      out += hex;
    } else {
      out += (char)b;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // A sharded checkpoint is read with every shard open at once (each is checked against its seal
  // through the fd it is then read from), so the soft limit on open files (often 1024) would
  // refuse one of 1000+ shards: take the hard limit.
  if (rlimit nofile; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);  // best effort: a limit it cannot raise stays as it was
  }
  CLI::App app{
      "leasetrain: train GPT-2-class models on leased GPU nodes (CPU reference backend, CUDA, "
      "NCCL/MPI data parallelism, tenant isolation)",
      "leasetrain"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "leasetrain 0.1.0");
  lt::cli::add_train_commands(app);
  lt::cli::add_data_commands(app);
  lt::cli::add_bench_commands(app);
  lt::cli::add_lease_commands(app);
  lt::cli::add_report_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "leasetrain: error: %s (see --help)\n", one_line(e.what()).c_str());
    return 2;
  } catch (const lt::UserError& e) {
    std::fprintf(stderr, "leasetrain: error: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const lt::IoError& e) {
    std::fprintf(stderr, "leasetrain: error: %s\n", one_line(e.what()).c_str());
    return 1;
  } catch (const lt::cli::CommandFailed& e) {
    if (*e.what()) std::fprintf(stderr, "leasetrain: %s\n", e.what());
    return e.code;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user named could not be created, read or renamed (an --out that is a file, a
    // read-only or pseudo filesystem): the user's to fix.
    std::fprintf(stderr, "leasetrain: error: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "leasetrain: error: out of host memory (a size in the config or a file is larger "
                         "than this machine can hold)\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "leasetrain: internal error: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "leasetrain: internal error: unknown exception\n");
    return 1;
  }
  return 0;
}
