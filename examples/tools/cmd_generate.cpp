// kvtrim generate: one prompt through the reference host, compressed by any method.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "engine/compression.hpp"
#include "engine/haystack.hpp"
#include "engine/runner.hpp"
#include "host_setup.hpp"
#include "method_args.hpp"

namespace kvtools {

namespace {
const char* kHelp =
    "usage: kvtrim generate [--model GGUF] --method M (--budget B | --ratio R)\n"
    "                       (--prompt-file F | --prompt TEXT | --haystack-tokens N) [--chat]\n"
    "                       [--max-new-tokens N] [--decode-budget T [--decode-interval K]]\n"
    "                       [--profile P.json] [--json] [method parameters]\n"
    "\n"
    "Prefills the prompt on the reference CPU host, compresses every layer's KV cache with the\n"
    "method at the end of its prefill, then decodes greedily against the compressed cache.\n"
    "  --model GGUF         a Llama-family GGUF (default: SmolLM2-135M-Instruct, fetched by\n"
    "                       scripts/fetch_model.sh; $KVTRIM_MODEL overrides)\n"
    "  --prompt TEXT / --prompt-file F   the prompt (special tokens such as <|im_start|> parsed)\n"
    "  --haystack-tokens N  the first N tokens of the essays (generated text without them): speed runs\n"
    "  --chat               wrap the prompt as the user turn of the model's chat template\n"
    "  --max-new-tokens N   default 64\n"
    "  --ignore-stop        decode all N tokens even past a stop token (speed runs)\n"
    "  --decode-budget T    also compress during decode (kvtrim/decode/): every K decode steps,\n"
    "                       or as soon as a head passes T + K rows, cut each KV head back to T\n"
    "                       rows (the method's per-layer shape, e.g. pyramidkv's) with the same\n"
    "                       method, scored from the last w decode queries; T >= the window. Methods\n"
    "                       needing prefill-only inputs, profiles or a cascade are refused\n"
    "  --decode-interval K  decode steps between compressions (default 16; needs --decode-budget)\n"
    "  --profile P.json     the model's profile (default: the shipped one for the default model)\n"
    "  --json               one JSON object: method, budget, answer, kv_bytes, kv_percent_of_full,\n"
    "                       prefill_s, kvtrim_s, decode_tokens_per_s, peak_rss_bytes,\n"
    "                       kv_allocated_peak_bytes, decode_compressions, decode_kvtrim_s, ...\n";
}  // namespace

int cmd_generate(int argc, char** argv) {
  auto valued = method_options();
  valued.insert({"model", "prompt", "prompt-file", "haystack-tokens", "max-new-tokens", "profile", "decode-budget",
                 "decode-interval"});
  args a(argc, argv, 2, valued, {"json", "chat", "ignore-stop"});
  if (a.help()) {
    std::fputs(kHelp, stdout);
    std::fputs(method_options_help().c_str(), stdout);
    return 0;
  }
  if (!a.positional().empty()) throw usage_error("unexpected argument '" + a.positional()[0] + "'");
  if (int(a.has("prompt")) + int(a.has("prompt-file")) + int(a.has("haystack-tokens")) != 1)
    throw usage_error("give one of --prompt, --prompt-file or --haystack-tokens");
  std::string text = a.str("prompt");
  if (a.has("prompt-file")) {
    std::ifstream in(a.str("prompt-file"), std::ios::binary);
    if (!in) throw std::runtime_error("cannot read prompt file " + a.str("prompt-file"));
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  const long long max_new = a.integer_in("max-new-tokens", 64, 0, 1 << 20);
  if (max_new < 0 || max_new > 1 << 20) throw usage_error("--max-new-tokens must be in [0, 1048576]");
  if (a.has("decode-interval") && !a.has("decode-budget")) throw usage_error("--decode-interval needs --decode-budget");
  const long long decode_budget = a.integer_in("decode-budget", 0, 1, 2147483647);
  const long long decode_interval = a.integer_in("decode-interval", 16, 1, 1 << 20);
  kvtrim::method_spec cfg = parse_method_spec(a);
  if (a.has("decode-budget"))  // a method that can't apply is refused before the model loads
    if (const std::string why = kvtrim::decode_refusal(kvtrim::find_method(cfg.name), cfg.rerotate_keys); !why.empty())
      throw kvtrim::error("kvtrim: " + why);
  const loaded_host h = load_host(a.str("model"), a.str("profile"), a.flag("json"));
  cfg.prof = h.prof.get();
  const kvtrim::method m = kvtrim::make_method(cfg, kvhost::kvtrim_shape(h.mdl->config()));
  std::unique_ptr<kvtrim::decode_compressor> dc;  // refuses a method that can't apply, before any work
  if (a.has("decode-budget")) dc = std::make_unique<kvtrim::decode_compressor>(m, kvtrim::decode_policy{decode_budget, decode_interval});
  if (a.flag("chat")) text = h.tok->apply_chat_template({{"user", text}}, true);
  std::vector<int> ids;
  if (a.has("haystack-tokens")) {
    const long long want = a.integer_in("haystack-tokens", 0, 1, k_max_tokens);
    if (want < 1) throw usage_error("--haystack-tokens must be >= 1");
    const std::string dir = kvhost::find_essay_dir();
    const std::string hay = dir.empty() ? kvhost::generated_haystack(static_cast<size_t>(want) * 8)
                                        : kvhost::load_text_dir(dir);
    ids = h.tok->encode(hay.substr(0, std::min(hay.size(), static_cast<size_t>(want) * 8)), false);
    if (static_cast<long long>(ids.size()) < want) throw std::invalid_argument("haystack too short");
    ids.resize(static_cast<size_t>(want));
  } else {
    ids = h.tok->encode(text, true);
  }
  if (ids.empty()) throw std::invalid_argument("empty prompt (0 tokens)");
  if (static_cast<int64_t>(ids.size()) > h.mdl->config().n_ctx)
    throw std::invalid_argument("prompt of " + std::to_string(ids.size()) + " tokens exceeds the model's context of " +
                                std::to_string(h.mdl->config().n_ctx));
  const std::vector<int32_t> prompt(ids.begin(), ids.end());
  if (!a.flag("json")) std::fprintf(stderr, "prefill of %zu tokens with %s ...\n", prompt.size(), cfg.name.c_str());
  const kvhost::run_report r = kvhost::run_generation(*h.mdl, *h.tok, prompt, &m, static_cast<int>(max_new),
                                                      a.flag("ignore-stop") ? std::vector<int32_t>{} : h.stops, dc.get());
  if (a.flag("json")) {
    std::printf("%s\n", kvhost::to_json(r).c_str());
  } else {
    std::printf("%s\n\n", r.answer.c_str());
    std::printf("method %s, budget %lld: %lld prompt tokens, KV %.2f MiB of %.2f MiB (%.2f%% of full)\n",
                r.method.c_str(), static_cast<long long>(r.budget), static_cast<long long>(r.prompt_tokens),
                r.kv_bytes / 1048576.0, r.kv_full_bytes / 1048576.0, r.kv_percent_of_full);
    std::printf("prefill %.2f s (kvtrim %.3f s), decode %.1f tokens/s, peak RSS %.0f MiB\n", r.prefill_s,
                r.kvtrim_s, r.decode_tokens_per_s, r.peak_rss_bytes / 1048576.0);
    if (dc)
      std::printf("decode-time compression to %lld every %lld steps: %lld layer steps (kvtrim %.3f s), KV allocated "
                  "%.2f MiB at the end, %.2f MiB at most\n",
                  static_cast<long long>(r.decode_budget), static_cast<long long>(r.decode_interval),
                  static_cast<long long>(r.decode_compressions), r.decode_kvtrim_s, r.kv_allocated_bytes / 1048576.0,
                  r.kv_allocated_peak_bytes / 1048576.0);
  }
  return 0;
}

}  // namespace kvtools
