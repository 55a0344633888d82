# popgate - a TLS-terminating POP3 proxy with filtering.
#
#   make            build/popgate (optimized, with debug symbols)
#   make test       install test dependencies, build with ASan+UBSan, run
#                   the unit tests and the integration tests
#   make test SANITIZER=thread   the same under ThreadSanitizer
#   make demo       a real Dovecot, popgate in front, a real client
#   make bench      benchmarks (ratios against direct Dovecot)
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (needs clang)
#   make install    PREFIX=/usr/local, config in /etc/popgate

VERSION   := 0.1.0
PREFIX    ?= /usr/local
DESTDIR   ?=
SANITIZER ?= address
FUZZ_SECONDS ?= 30
PYTHON    ?= /usr/bin/python3

PKGS      := libuv openssl libclamav inih
CC        ?= cc
CSTD      := -std=c11 -D_GNU_SOURCE
WARN      := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes
CFLAGS    ?= -O2 -g
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lpthread
ALL_CFLAGS = $(CSTD) $(WARN) $(CFLAGS) $(PKG_CFLAGS) -Iproxy -Ifilters \
             -DPX_VERSION='"$(VERSION)"'

SRCS  := $(wildcard proxy/*.c) $(wildcard filters/*.c)
# Modules with no I/O: unit tests and fuzz targets link these.
CODEC := proxy/dot.c proxy/pop3.c proxy/cmdq.c proxy/tls.c proxy/spool.c \
         proxy/log.c proxy/buf.c \
         $(wildcard proxy/conf*.c) $(wildcard filters/*.c)
UNIT  := $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))
FUZZ  := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))

ifeq ($(SANITIZER),thread)
SAN_FLAGS := -fsanitize=thread
else
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
endif
SAN_DIR := build/$(if $(filter thread,$(SANITIZER)),tsan,asan)

.PHONY: all test unit integration deps demo bench fuzz install clean
all: build/popgate

build/obj/%.o: %.c $(wildcard proxy/*.h filters/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/popgate: $(SRCS:%.c=build/obj/%.o)
	$(CC) $(CFLAGS) $^ $(PKG_LIBS) -o $@

$(SAN_DIR)/obj/%.o: %.c $(wildcard proxy/*.h filters/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN_FLAGS) -fno-omit-frame-pointer -c $< -o $@

$(SAN_DIR)/popgate: $(SRCS:%.c=$(SAN_DIR)/obj/%.o)
	$(CC) $(SAN_FLAGS) $^ $(PKG_LIBS) -o $@

# Unit tests: every allocation the test and the codecs make goes through
# tests/unit/failalloc.c (see failalloc.h), so a test can make one fail.
FAILALLOC := $(SAN_DIR)/obj/tests/unit/failalloc.o
WRAP_ALLOC := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free

$(FAILALLOC): tests/unit/failalloc.h

$(SAN_DIR)/test_%: tests/unit/test_%.c tests/testutil.h tests/unit/failalloc.h \
                   $(FAILALLOC) $(CODEC:%.c=$(SAN_DIR)/obj/%.o)
	$(CC) $(ALL_CFLAGS) -Itests -O1 $(SAN_FLAGS) $< $(FAILALLOC) \
	  $(CODEC:%.c=$(SAN_DIR)/obj/%.o) $(WRAP_ALLOC) \
	  $(PKG_LIBS) $(shell pkg-config --cflags --libs cmocka) -o $@

deps:
	@scripts/deps.sh

unit: $(UNIT:%=$(SAN_DIR)/%)
	@set -e; for t in $^; do echo "== $$t"; $$t; done

integration: $(SAN_DIR)/popgate
	POPGATE_BIN=$(CURDIR)/$(SAN_DIR)/popgate \
	  TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp $(TSAN_OPTIONS)" \
	  $(PYTHON) -m pytest -q tests/integration

test: deps
	$(MAKE) unit integration

demo: deps all
	scripts/demo.sh

bench: all
	$(PYTHON) tests/bench/bench.py

build/fuzz/%: tests/fuzz/%.c $(CODEC) tests/testutil.h
	@mkdir -p build/fuzz
	clang $(CSTD) -g -O1 -fsanitize=fuzzer,address,undefined -Iproxy -Ifilters -Itests \
	  $(PKG_CFLAGS) $(filter %.c,$^) $(PKG_LIBS) -o $@

fuzz: $(FUZZ:%=build/fuzz/%)
	@set -e; for f in $(FUZZ); do \
	  mkdir -p build/fuzz/corpus/$$f; \
	  echo "== $$f ($(FUZZ_SECONDS)s)"; \
	  build/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    build/fuzz/corpus/$$f tests/fuzz/corpus/$${f#fuzz_}; \
	done

install: all
	install -D -m 0755 build/popgate $(DESTDIR)$(PREFIX)/bin/popgate
	install -D -m 0644 conf/popgate.service \
	  $(DESTDIR)/lib/systemd/system/popgate.service
	@if [ ! -e $(DESTDIR)/etc/popgate/popgate.ini ]; then \
	  install -D -m 0640 conf/popgate.ini $(DESTDIR)/etc/popgate/popgate.ini; \
	fi

clean:
	rm -rf build
