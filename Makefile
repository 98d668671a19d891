# Switchboard — plain GNU make.
#
#   make            build build/release/switchboard and build/release/mock-provider (ops/mock_provider.c)
#   make asan       build the ASan + UBSan variant under build/asan/
#   make run        set up the local stack (packages, Redis, PostgreSQL, migrations) and run the gateway beside the mock provider, seeding a demo tenant
#   make test       same set-up, then the whole suite (unit, fuzz corpora, integration; release and asan)
#   make bench      same set-up, then the benchmarks (they print figures, they assert nothing)
#   make soak       same set-up, then an hour of steady mixed traffic: RSS, fds and loop lag every minute
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS each
#   make install    the binary, the inbox page, the migrations, the systemd unit and the nginx front under
#                   $(DESTDIR)$(PREFIX) (PREFIX=/usr/local by default)
#
# Sources are found by wildcard: a new module is a new .c/.h pair in its directory, nothing to register here.

V        ?= release
BUILD    := build/$(V)
PKGS     := libuv hiredis libpq jansson msgpack libcurl
WERROR   ?= $(if $(CI),-Werror,)

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
            -Wimplicit-fallthrough $(WERROR)
CFLAGS   ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libwebsockets: only -lwebsockets. Its .pc adds -lcap, which the shared library already links for itself (we call
# nothing in libcap); its headers are in /usr/include, so it needs no --cflags either.
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lwebsockets -lmbedcrypto -lpthread -lm  # mbedTLS ships no .pc

ifeq ($(V),asan)
  CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
endif

ALL_CFLAGS := -std=c11 $(CFLAGS) $(WARN)

LIB_SRC  := $(wildcard proto/*.c actors/*.c adapters/*.c adapters/*/*.c shards/*.c gateway/*.c)
LIB_SRC  := $(filter-out gateway/main.c,$(LIB_SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 60

.PHONY: all asan units benches fuzzers setup run test bench soak fuzz clean install
all: $(BUILD)/switchboard $(BUILD)/mock-provider

asan:
	@$(MAKE) --no-print-directory V=asan all units

units: $(UNIT_BIN)
benches: $(BENCH_BIN)

$(BUILD)/switchboard: $(BUILD)/gateway/main.o $(BUILD)/libsb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The mock provider (Twilio + Meta send APIs, Twilio voice, for offline runs, tests and benchmarks): two files over
# the library.
$(BUILD)/mock-provider: $(BUILD)/ops/mock_provider.o $(BUILD)/ops/mock_voice.o $(BUILD)/libsb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libsb.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libsb.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BUILD)/libsb.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# libFuzzer targets: clang only, always with ASan + UBSan. The library is compiled once with coverage
# instrumentation (fuzzer-no-link) under build/fuzz/obj/, and each target links against those objects.
FUZZ_CFLAGS  := -std=c11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
                $(filter-out -Werror,$(WARN))
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)

build/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ)
	@mkdir -p $(@D)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_OBJ) $(LDLIBS)

fuzzers: $(FUZZ_BIN)

# --- the local stack and the promises of the README -------------------------------------------

setup:
	@ops/deps.sh
	@ops/stack.sh up
	@ops/migrate.sh

run: setup
	@$(MAKE) --no-print-directory all
	exec env BUILD=$(BUILD) ops/run.sh

test: setup
	@[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund)
	@[ tests/clients/node_modules/.package-lock.json -nt tests/clients/package-lock.json ] || \
		(cd tests/clients && npm ci --no-audit --no-fund)
	@$(MAKE) --no-print-directory all units benches
	@$(MAKE) --no-print-directory V=asan all units
	@$(MAKE) --no-print-directory fuzzers
	@tests/run.sh

bench: setup
	@$(MAKE) --no-print-directory all benches
	@tests/bench/run.sh

soak: setup
	@$(MAKE) --no-print-directory all benches
	@tests/bench/soak.sh

fuzz: fuzzers
	@for f in $(FUZZ_BIN); do \
	  n=$$(basename $$f); mkdir -p build/fuzz/corpus/$$n; \
	  $$f -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus/$$n tests/fuzz/corpus/$$n || exit 1; \
	done

clean:
	rm -rf build

# --- install: the layout ops/systemd/switchboard.service expects ------------------------------------------------
#
#   $(PREFIX)/bin/switchboard
#   $(PREFIX)/share/switchboard/www/            the inbox page (the unit's WorkingDirectory is share/switchboard)
#   $(PREFIX)/share/switchboard/sql/            migrations, applied by share/switchboard/ops/migrate.sh
#   $(PREFIX)/share/switchboard/ops/migrate.sh  (MIGRATE_CONN="host=... user=..." names the server)
#   $(PREFIX)/share/switchboard/nginx/switchboard.conf, switchboard.conf.example, README.md
#   $(PREFIX)/lib/systemd/system/switchboard.service   with /usr/local replaced by $(PREFIX)
PREFIX  ?= /usr/local
DESTDIR ?=
SHARE   := $(DESTDIR)$(PREFIX)/share/switchboard

install: $(BUILD)/switchboard
	install -d $(DESTDIR)$(PREFIX)/bin $(SHARE)/www $(SHARE)/sql $(SHARE)/ops $(SHARE)/nginx \
		$(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 $(BUILD)/switchboard $(DESTDIR)$(PREFIX)/bin/switchboard
	install -m 0644 www/inbox.html www/inbox.css www/inbox.js $(SHARE)/www/
	install -m 0644 sql/[0-9][0-9][0-9][0-9]_*.sql $(SHARE)/sql/
	install -m 0755 ops/migrate.sh $(SHARE)/ops/migrate.sh
	install -m 0644 ops/nginx/switchboard.conf $(SHARE)/nginx/switchboard.conf
	install -m 0644 ops/switchboard.conf.example README.md $(SHARE)/
	sed 's|/usr/local/|$(PREFIX)/|g' ops/systemd/switchboard.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/switchboard.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/switchboard.service

-include $(LIB_OBJ:.o=.d) $(BUILD)/gateway/main.d $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d) \
         $(BUILD)/ops/mock_provider.d $(BUILD)/ops/mock_voice.d $(FUZZ_LIB_OBJ:.o=.d)
