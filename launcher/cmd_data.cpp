// `leasetrain data ...`: turn text files into token shards (bytes or a tokenizer.json), and inspect shards
// (ours or llm.c's).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "launcher/cli_checks.h"
#include "launcher/commands.h"
#include "runtime/data.h"
#include "runtime/tokenizer.h"

namespace lt::cli {
namespace {

struct PrepareArgs {
  std::vector<std::string> inputs;
  std::string output;
  double val_fraction = 0.1;
  size_t shard_tokens = 100'000'000;
  std::string tokenizer;
  int threads = (int)std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
};

// [0, 1): CLI::Range is closed, and a fraction of 1 would leave nothing to train on.
CLI::Validator fraction_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        try {
          v = std::stod(s);
        } catch (...) {
          return "expected a number in [0, 1), got " + s;
        }
        return v >= 0.0 && v < 1.0 ? "" : "expected a number in [0, 1), got " + s;
      },
      "FRACTION in [0,1)", "fraction");
}

void add_prepare(CLI::App& data) {
  auto args = std::make_shared<PrepareArgs>();
  CLI::App* cmd = data.add_subcommand(
      "prepare", "Tokenize text files into token shards: bytes (vocabulary 256) or a tokenizer.json");
  cmd->footer(
      "Without --tokenizer each byte is one token. With --tokenizer (a tokenizer.json of Hugging Face's "
      "`tokenizers`: byte-level BPE as GPT-2's) the UTF-8 text is encoded to exactly the ids `tokenizers` gives, "
      "by --threads threads (the same ids for any count), with progress on stderr for large inputs; the "
      "vocabulary must fit the shards' uint16 ids (65536). The tokenizer is copied to PREFIX_tokenizer.json "
      "(the byte-level one without --tokenizer), where `train` finds it and copies it into every checkpoint. The inputs are concatenated in the order given; the LAST "
      "--val-fraction of the tokens becomes PREFIX_val_000000.bin (so training never sees it) "
      "and the rest PREFIX_train_000000.bin, PREFIX_train_000001.bin, ..., split every "
      "--shard-tokens. All inputs are read before anything is written, so a missing input "
      "leaves no output; shards are written atomically in llm.c's format.\n"
      "Example: leasetrain data prepare --input book1.txt book2.txt --output data/books\n"
      "         leasetrain data prepare --tokenizer tokenizer.json --input corpus.txt --output data/corpus");
  cmd->add_option("--input", args->inputs, "Text files to tokenize (one or more)")
      ->type_name("FILE")
      ->required()
      ->expected(1, -1);
  cmd->add_option("--output", args->output,
                  "Output prefix, e.g. data/fortunes writes data/fortunes_train_000000.bin; the "
                  "directory is created if needed")
      ->type_name("PREFIX")
      ->required();
  cmd->add_option("--val-fraction", args->val_fraction,
                  "Fraction of tokens, taken from the end, held out for validation; 0 writes no "
                  "val shard")
      ->check(fraction_validator())
      ->capture_default_str();
  cmd->add_option("--shard-tokens", args->shard_tokens, "Tokens per shard file")
      ->check(in_range<size_t>(1, 2147483647))
      ->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json to encode with (default: bytes)")
      ->type_name("FILE");
  cmd->add_option("--threads", args->threads, "Threads encoding with --tokenizer (default: the online cores)")
      ->check(in_range(1, 1024));
  cmd->callback([args] {
    std::optional<Tokenizer> tok;
    if (!args->tokenizer.empty()) tok = Tokenizer::from_file(args->tokenizer);
    for (const ShardSummary& s : prepare_text_shards(args->inputs, args->output, args->val_fraction,
                                                     args->shard_tokens, tok ? &*tok : nullptr, args->threads, true))
      std::printf("wrote %s (%zu tokens)\n", s.path.c_str(), s.tokens);
  });
}

void add_inspect(CLI::App& data) {
  auto files = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = data.add_subcommand("inspect", "Validate token shards and print their stats");
  cmd->footer(
      "Checks the llm.c shard format (magic 20240520, version 1, uint16 tokens) and prints one "
      "JSON line per shard: {path, tokens, min, max}. min and max are null for an empty shard; "
      "the shard fits any vocabulary larger than max.");
  cmd->add_option("files", *files, "Shard files")->type_name("FILE")->required()->expected(1, -1);
  cmd->callback([files] {
    for (const std::string& path : *files) {
      Shard s(path);
      nlohmann::ordered_json j = {
          {"path", path}, {"tokens", s.size()}, {"min", nullptr}, {"max", nullptr}};
      if (s.size() > 0) {
        auto [lo, hi] = std::minmax_element(s.data(), s.data() + s.size());
        j["min"] = *lo;
        j["max"] = *hi;
      }
      std::printf("%s\n", j.dump().c_str());
    }
  });
}

}  // namespace

void add_data_commands(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Prepare and inspect token shards");
  data->require_subcommand(1);
  add_prepare(*data);
  add_inspect(*data);
}

}  // namespace lt::cli
