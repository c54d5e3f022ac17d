// kvtrim-oracle: run llama.cpp (through llama.h only) on one prompt and dump what the golden files need.
// Built by scripts/oracle/build_llama_cpp.sh against the pinned llama.cpp; driven by scripts/oracle/golden.py.
//
//   kvtrim-oracle -m MODEL -o OUTPREFIX (--text FILE | --chat FILE) [options]
//     --text FILE        prompt text, raw UTF-8 bytes
//     --chat FILE        chat messages: role\0content\0role\0content\0... formatted with the model's own
//                        chat template via llama_chat_apply_template(add_ass = true)
//     -t N               threads for prefill and decode (default 2)
//     -n N               greedy continuation length (default 32; EOG tokens do not stop it)
//     --steps N          how many decode steps' logits to dump (default 3, < n)
//     --no-add-special   do not let the tokenizer add BOS/EOS (default: add_special = true)
//     --no-parse-special treat special-token text as plain text (default: parse_special = true)
//     --tokenize-only    stop after tokenisation (writes meta only)
//     experiments only (the golden files use the defaults):
//     --ubatch N         physical batch size (default: whole prompt in one ubatch)
//     --fa               flash attention on        --kv-f16   K/V cache in F16
//   Writes OUTPREFIX.meta.json (all strings hex-encoded UTF-8 bytes, since token pieces can be partial
//   UTF-8), OUTPREFIX.prompt_logits.f32 (n_vocab float32, logits at the last prompt position) and
//   OUTPREFIX.step_logits.f32 (steps x n_vocab float32: logits after feeding continuation[0..steps-1]).
//
// Settings are fixed for reproducibility: CPU only, n_ctx = n_batch = n_ubatch >= prompt + n (the whole
// prompt is one ubatch), flash attention off, K and V cache in F32 (no KV quantisation, no F16
// rounding of K/V), one sequence, greedy argmax (lowest id wins a tie), no sampler, no penalties.
#include "llama.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string & msg) {
    std::fprintf(stderr, "kvtrim-oracle: %s\n", msg.c_str());
    std::exit(1);
}

std::string read_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) die("cannot read " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) { out += d[c >> 4]; out += d[c & 15]; }
    return out;
}

void write_floats(const std::string & path, const std::vector<float> & v) {
    const std::string tmp = path + ".tmp";
    FILE * f = std::fopen(tmp.c_str(), "wb");
    if (!f) die("cannot write " + tmp);
    if (!v.empty() && std::fwrite(v.data(), sizeof(float), v.size(), f) != v.size()) die("short write " + tmp);
    std::fclose(f);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) die("cannot rename " + tmp);
}

std::string piece(const llama_vocab * vocab, llama_token t) {
    std::vector<char> buf(64);
    int n = llama_token_to_piece(vocab, t, buf.data(), (int) buf.size(), 0, true);
    if (n < 0) { buf.resize(-n); n = llama_token_to_piece(vocab, t, buf.data(), (int) buf.size(), 0, true); }
    return std::string(buf.data(), n);
}

llama_token argmax(const float * x, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i) if (x[i] > x[best]) best = i;
    return best;
}

// logit(top-1) - logit(top-2): how safe the greedy choice is against small numeric differences
float margin(const float * x, int n) {
    const int b = argmax(x, n);
    float second = -INFINITY;
    for (int i = 0; i < n; ++i) if (i != b && x[i] > second) second = x[i];
    return x[b] - second;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char ** argv) {
    std::string model_path, out, text_file, chat_file;
    int threads = 2, n_predict = 32, n_steps = 3;
    bool add_special = true, parse_special = true, tokenize_only = false, fa = false, kv_f16 = false;
    int ubatch = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string { if (i + 1 >= argc) die("missing value for " + a); return argv[++i]; };
        if (a == "-m") model_path = next();
        else if (a == "-o") out = next();
        else if (a == "--text") text_file = next();
        else if (a == "--chat") chat_file = next();
        else if (a == "-t") threads = std::atoi(next().c_str());
        else if (a == "-n") n_predict = std::atoi(next().c_str());
        else if (a == "--steps") n_steps = std::atoi(next().c_str());
        else if (a == "--no-add-special") add_special = false;
        else if (a == "--no-parse-special") parse_special = false;
        else if (a == "--tokenize-only") tokenize_only = true;
        else if (a == "--ubatch") ubatch = std::atoi(next().c_str());
        else if (a == "--fa") fa = true;
        else if (a == "--kv-f16") kv_f16 = true;
        else die("unknown argument " + a);
    }
    if (model_path.empty() || out.empty() || (text_file.empty() == chat_file.empty()))
        die("usage: kvtrim-oracle -m MODEL -o OUTPREFIX (--text FILE | --chat FILE) [-t N] [-n N] [--steps N] "
            "[--no-add-special] [--no-parse-special] [--tokenize-only]");
    if (threads < 1) die("-t must be >= 1");
    if (n_predict < 1) die("-n must be >= 1");
    if (n_steps < 0 || n_steps >= n_predict) die("--steps must be in [0, n - 1]");

    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) die("cannot load model " + model_path);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    // prompt text
    std::string text;
    std::string tmpl_used;
    if (!text_file.empty()) {
        text = read_file(text_file);
    } else {
        const std::string raw = read_file(chat_file);
        std::vector<std::string> parts;
        size_t p = 0;
        while (p < raw.size()) {
            size_t q = raw.find('\0', p);
            if (q == std::string::npos) q = raw.size();
            parts.push_back(raw.substr(p, q - p));
            p = q + 1;
        }
        if (parts.empty() || parts.size() % 2) die("chat file must hold role\\0content pairs");
        std::vector<llama_chat_message> msgs;
        for (size_t i = 0; i < parts.size(); i += 2) msgs.push_back({parts[i].c_str(), parts[i + 1].c_str()});
        const char * tmpl = llama_model_chat_template(model, nullptr);
        if (!tmpl) die("model has no chat template");
        tmpl_used = tmpl;
        std::vector<char> buf(raw.size() * 2 + 1024);
        int n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), true, buf.data(), (int) buf.size());
        if (n < 0) die("llama_chat_apply_template failed (template not supported)");
        if (n > (int) buf.size()) {
            buf.resize(n);
            n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), true, buf.data(), (int) buf.size());
        }
        text.assign(buf.data(), n);
    }
    if (text.empty()) die("empty prompt");

    // tokenise
    std::vector<llama_token> toks(text.size() + 16);
    int n_tok = llama_tokenize(vocab, text.data(), (int) text.size(), toks.data(), (int) toks.size(), add_special, parse_special);
    if (n_tok < 0) {
        toks.resize(-n_tok);
        n_tok = llama_tokenize(vocab, text.data(), (int) text.size(), toks.data(), (int) toks.size(), add_special, parse_special);
    }
    if (n_tok <= 0) die("tokenisation failed or empty");
    toks.resize(n_tok);

    const int n_ctx_train = llama_model_n_ctx_train(model);
    if (n_tok + n_predict > n_ctx_train) die("prompt + n exceeds the model's training context " + std::to_string(n_ctx_train));

    std::vector<llama_token> cont;
    std::vector<float> margins;  // margins[k]: top-1 minus top-2 logit of the logits that chose cont[k]
    std::vector<float> prompt_logits, step_logits;
    double t_prefill_ms = 0, t_decode_ms = 0;
    uint32_t n_ctx_real = 0, n_batch_real = 0, n_ubatch_real = 0;

    if (!tokenize_only) {
        llama_context_params cp = llama_context_default_params();
        const uint32_t need = (uint32_t) (n_tok + n_predict);
        cp.n_ctx = need;              // llama.cpp pads to a multiple of 256
        cp.n_batch = need;            // whole prompt in one llama_decode call ...
        cp.n_ubatch = ubatch > 0 ? (uint32_t) ubatch : need;  // ... and in one physical ubatch
        cp.n_seq_max = 1;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.type_k = kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
        cp.type_v = kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
        cp.offload_kqv = false;
        cp.op_offload = false;
        cp.embeddings = false;
        cp.no_perf = true;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) die("cannot create context");
        n_ctx_real = llama_n_ctx(ctx);
        n_batch_real = llama_n_batch(ctx);
        n_ubatch_real = llama_n_ubatch(ctx);
        if (ubatch <= 0 && (int) n_ubatch_real < n_tok) die("n_ubatch smaller than prompt");

        llama_batch batch = llama_batch_init(n_tok, 0, 1);
        for (int i = 0; i < n_tok; ++i) {
            batch.token[i] = toks[i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = (i == n_tok - 1);
        }
        batch.n_tokens = n_tok;
        auto t0 = std::chrono::steady_clock::now();
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed on the prompt");
        const float * lg = llama_get_logits_ith(ctx, -1);
        t_prefill_ms = ms_since(t0);
        prompt_logits.assign(lg, lg + n_vocab);
        llama_batch_free(batch);

        llama_token next = argmax(lg, n_vocab);
        margins.push_back(margin(lg, n_vocab));
        llama_batch one = llama_batch_init(1, 0, 1);
        t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < n_predict; ++k) {
            cont.push_back(next);
            if (k == n_predict - 1) break;  // the last token is not fed back
            one.token[0] = next;
            one.pos[0] = n_tok + k;
            one.n_seq_id[0] = 1;
            one.seq_id[0][0] = 0;
            one.logits[0] = 1;
            one.n_tokens = 1;
            if (llama_decode(ctx, one) != 0) die("llama_decode failed at decode step " + std::to_string(k));
            const float * l = llama_get_logits_ith(ctx, -1);
            if (k < n_steps) step_logits.insert(step_logits.end(), l, l + n_vocab);
            next = argmax(l, n_vocab);
            margins.push_back(margin(l, n_vocab));
        }
        t_decode_ms = ms_since(t0);
        llama_batch_free(one);
        llama_free(ctx);

        write_floats(out + ".prompt_logits.f32", prompt_logits);
        write_floats(out + ".step_logits.f32", step_logits);
    }

    // meta (hex strings; numbers plain)
    char desc[256];
    llama_model_desc(model, desc, sizeof desc);
    std::ostringstream js;
    js << "{\n";
    js << "  \"model_desc_hex\": \"" << hex(desc) << "\",\n";
    js << "  \"system_info_hex\": \"" << hex(llama_print_system_info()) << "\",\n";
    js << "  \"n_vocab\": " << n_vocab << ",\n";
    js << "  \"n_ctx_train\": " << n_ctx_train << ",\n";
    js << "  \"add_bos\": " << (llama_vocab_get_add_bos(vocab) ? "true" : "false") << ",\n";
    js << "  \"add_special\": " << (add_special ? "true" : "false") << ",\n";
    js << "  \"parse_special\": " << (parse_special ? "true" : "false") << ",\n";
    js << "  \"chat_template_hex\": \"" << hex(tmpl_used) << "\",\n";
    js << "  \"text_hex\": \"" << hex(text) << "\",\n";
    js << "  \"tokens\": [";
    for (int i = 0; i < n_tok; ++i) js << (i ? "," : "") << toks[i];
    js << "],\n";
    js << "  \"continuation\": [";
    for (size_t i = 0; i < cont.size(); ++i) js << (i ? "," : "") << cont[i];
    js << "],\n";
    js << "  \"continuation_pieces_hex\": [";
    for (size_t i = 0; i < cont.size(); ++i) js << (i ? "," : "") << "\"" << hex(piece(vocab, cont[i])) << "\"";
    js << "],\n";
    js << "  \"continuation_is_eog\": [";
    for (size_t i = 0; i < cont.size(); ++i) js << (i ? "," : "") << (llama_vocab_is_eog(vocab, cont[i]) ? "true" : "false");
    js << "],\n";
    js << "  \"continuation_margins\": [";
    for (size_t i = 0; i < margins.size(); ++i) js << (i ? "," : "") << margins[i];
    js << "],\n";
    js << "  \"n_steps\": " << (tokenize_only ? 0 : n_steps) << ",\n";
    js << "  \"threads\": " << threads << ",\n";
    js << "  \"n_ctx\": " << n_ctx_real << ",\n";
    js << "  \"n_batch\": " << n_batch_real << ",\n";
    js << "  \"n_ubatch\": " << n_ubatch_real << ",\n";
    js << "  \"flash_attn\": " << (fa ? "true" : "false") << ",\n";
    js << "  \"kv_type\": \"" << (kv_f16 ? "f16" : "f32") << "\",\n";
    js << "  \"prefill_ms\": " << t_prefill_ms << ",\n";
    js << "  \"decode_ms\": " << t_decode_ms << "\n";
    js << "}\n";
    const std::string meta = out + ".meta.json";
    {
        std::ofstream f(meta + ".tmp", std::ios::binary);
        if (!f) die("cannot write " + meta);
        f << js.str();
    }
    if (std::rename((meta + ".tmp").c_str(), meta.c_str()) != 0) die("cannot rename " + meta);

    llama_model_free(model);
    llama_backend_free();
    return 0;
}
