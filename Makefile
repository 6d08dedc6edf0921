# dgemma - DiffusionGemma inference in C.
#   make          build ./dgemma (and the test binary)
#   make test     install system deps if missing, build, run every test (no Python needed)
#   make debug    the same tests built with -O1 -g -fsanitize=address,undefined
#   make run      build and answer PROMPT with MODEL (default: the bundled tiny random-weight model)
#   make fixtures regenerate tests/fixtures with the reference (needs torch + transformers)

CC      ?= cc
OPT     ?= -O2
JANSSON_CFLAGS := $(shell pkg-config --cflags jansson 2>/dev/null)
JANSSON_LIBS   := $(shell pkg-config --libs jansson 2>/dev/null || echo -ljansson)
# libedit (BSD licensed): line editing and history for `dgemma chat`
EDIT_LIBS   := $(shell pkg-config --libs libedit 2>/dev/null || echo -ledit)
# libmicrohttpd: the HTTP server of `dgemma serve`
MHD_CFLAGS     := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS       := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
CFLAGS  ?= $(OPT) -g
# -ffp-contract=off: no fused multiply-adds behind the oracle's back (clang and -march=native would
# contract a*b+c, rounding once where the reference rounds twice)
CFLAGS  += -std=c11 -ffp-contract=off -Wall -Wextra -Wshadow -Iinclude -Isrc $(JANSSON_CFLAGS)
LDLIBS  += $(JANSSON_LIBS) -lm -pthread
BUILD   ?= build

LIB_SRC := src/load/safetensors.c src/load/config.c src/load/weights.c src/load/gguf.c src/load/gguf_write.c src/load/mlx.c \
           src/kernels/kernels_ref.c src/kernels/quants.c src/kernels/quants_mlx.c src/kernels/threads.c \
           src/kernels/gemm.c src/kernels/gemm_x86.c src/kernels/gemm_neon.c src/kernels/quants_x86.c \
           src/model/forward.c src/diffusion/rng.c src/diffusion/sampler.c \
           src/tokenizer/tokenizer.c src/tokenizer/tok_json.c src/tokenizer/tok_gguf.c \
           src/tokenizer/jinja.c src/tokenizer/jinja_eval.c src/tokenizer/jinja_value.c src/tokenizer/jinja_builtins.c \
           src/tokenizer/chat_template.c src/tokenizer/reply.c \
           src/quant/plan.c src/quant/meta.c src/quant/write.c src/quant/synth.c
# the server (dgemma serve)
SERVER_API := server/openai.c server/generate.c
SERVER_SRC := server/server.c server/webui.c $(SERVER_API)
CLI_SRC := cli/main.c cli/run.c cli/npy.c cli/quantize.c bench/bench.c bench/peak.c bench/gemm.c $(SERVER_SRC)
TEST_SRC := tests/test_main.c tests/test_kernels.c tests/test_unit.c tests/test_quants.c tests/test_gguf.c tests/test_mlx.c \
            tests/test_parity.c tests/test_errors.c tests/test_sampler.c tests/test_tokenizer.c \
            tests/test_jinja.c tests/test_chat.c tests/test_reply.c tests/test_quantize.c tests/test_server.c \
            tests/alloc_count.c cli/npy.c $(SERVER_API)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

DEFAULT_MODEL := tests/fixtures/tiny-a/bf16
MODEL  ?= $(DEFAULT_MODEL)
PROMPT ?= Why is the sky blue?
# on the tiny model: a few canvases at the checkpoint's 48 steps, a fixed seed
RUN_FLAGS ?= $(if $(filter $(DEFAULT_MODEL),$(MODEL)),-n 64 --seed 1,)

.PHONY: all deps test test-arm debug run fixtures clean
all: dgemma $(BUILD)/dgemma_test

deps:
	@bash tools/install-deps.sh

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h src/*/*.inc cli/*.h tests/*.h bench/*.h server/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icli -I. -c $< -o $@

# the SIMD kernels rely on complete unrolling of their small register-block loops (accumulators
# kept in registers), which GCC does at -O3
$(BUILD)/src/kernels/gemm.o $(BUILD)/src/kernels/gemm_x86.o $(BUILD)/src/kernels/gemm_neon.o $(BUILD)/src/kernels/quants_x86.o $(BUILD)/bench/peak.o: CFLAGS += -O3

# $(call text_to_c,NAME): the text file $< as `static const char NAME[]` in $@ (trigraph-safe: every ?
# is escaped)
text_to_c = mkdir -p $(dir $@) && (echo 'static const char $(1)[] ='; \
	 sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	 echo '    ;') > $@.tmp && mv $@.tmp $@

# the built-in chat template, compiled in as a C string
$(BUILD)/gen/chat_default.h: src/tokenizer/chat_default.jinja
	$(call text_to_c,chat_default_src)

$(BUILD)/src/tokenizer/chat_template.o: $(BUILD)/gen/chat_default.h
$(BUILD)/src/tokenizer/chat_template.o: CFLAGS += -I$(BUILD)/gen

# the web page of dgemma serve, compiled in the same way
$(BUILD)/gen/webui_html.h: server/index.html
	$(call text_to_c,webui_html_src)

$(BUILD)/server/webui.o: $(BUILD)/gen/webui_html.h
$(BUILD)/server/webui.o: CFLAGS += -I$(BUILD)/gen
$(BUILD)/server/server.o: CFLAGS += $(MHD_CFLAGS)

$(BUILD)/libdgemma.a: $(LIB_OBJ)
	ar rcs $@ $^

dgemma: $(CLI_OBJ) $(BUILD)/libdgemma.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libdgemma.a $(EDIT_LIBS) $(MHD_LIBS) $(LDLIBS)

$(BUILD)/dgemma: $(CLI_OBJ) $(BUILD)/libdgemma.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libdgemma.a $(EDIT_LIBS) $(MHD_LIBS) $(LDLIBS)

# the test binary counts the engine's allocations (tests/alloc_count.c)
WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(BUILD)/dgemma_test: $(TEST_OBJ) $(BUILD)/libdgemma.a
	$(CC) $(CFLAGS) $(LDFLAGS) $(WRAP) -o $@ $(TEST_OBJ) $(BUILD)/libdgemma.a $(LDLIBS)

test: deps
	@$(MAKE) --no-print-directory all
	bash tests/run_all.sh ./dgemma ./$(BUILD)/dgemma_test

# the kernels (NEON path) cross-compiled for aarch64 and run under qemu-aarch64; tests/run_all.sh
# runs this when the cross toolchain is present (tools/install-deps.sh installs it)
ARM_CC ?= aarch64-linux-gnu-gcc
KERNEL_SRC := src/kernels/kernels_ref.c src/kernels/quants.c src/kernels/quants_mlx.c src/kernels/threads.c \
              src/kernels/gemm.c src/kernels/gemm_x86.c src/kernels/gemm_neon.c src/kernels/quants_x86.c
build-arm/kernels_test: tests/kernels_main.c tests/test_kernels.c $(KERNEL_SRC) $(wildcard src/kernels/*.h tests/*.h)
	@mkdir -p build-arm
	cd build-arm && $(ARM_CC) -O3 -g -std=c11 -ffp-contract=off -Wall -Wextra -Wshadow -I../include -I../src -c $(addprefix ../,$(KERNEL_SRC))
	@# the tests at -O1: GCC 12's aarch64 vectorizer crashes (ICE) on a reduction loop in test_kernels.c at -O3
	$(ARM_CC) -O1 -g -std=c11 -ffp-contract=off -Wall -Wextra -Wshadow -Iinclude -Isrc -static -pthread \
		-o $@ tests/kernels_main.c tests/test_kernels.c $(patsubst src/kernels/%.c,build-arm/%.o,$(KERNEL_SRC)) -lm
test-arm: build-arm/kernels_test
	qemu-aarch64 build-arm/kernels_test

DEBUG_FLAGS := OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	LDFLAGS="-fsanitize=address,undefined"
debug: deps
	@$(MAKE) --no-print-directory BUILD=build-debug $(DEBUG_FLAGS) build-debug/dgemma build-debug/dgemma_test
	DG_SKIP_ARM=1 ASAN_OPTIONS=detect_leaks=1 bash tests/run_all.sh ./build-debug/dgemma ./build-debug/dgemma_test

run: deps
	@$(MAKE) --no-print-directory dgemma
	@if [ "$(MODEL)" = "$(DEFAULT_MODEL)" ]; then \
	    echo "make run: $(MODEL) is a tiny test model with RANDOM weights (and a 2048-token test vocabulary):"; \
	    echo "          its answer is noise by design. Use a real checkpoint with: make run MODEL=DIR [PROMPT='...']"; \
	fi
	./dgemma run -m $(MODEL) -p "$(PROMPT)" $(RUN_FLAGS)

fixtures:
	python3 tools/reference/make_fixtures.py
	python3 tools/reference/make_trajectories.py
	python3 tools/reference/make_template_fixtures.py

clean:
	rm -rf build build-debug build-arm dgemma
