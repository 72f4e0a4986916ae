# davit: plain Makefile, dependencies found through pkg-config.
#
#   make            build ./davit (optimised, with debug info)
#   make check      build, then run every test (unit + end-to-end); closing summary line
#   make unit       unit tests only;   make e2e   end-to-end tests only
#   make asan       the same tests against an -fsanitize=address,undefined build
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (default 60) with clang
#   make clean
#
# Every module is a folder under src/; every .c file there is compiled. main()
# lives in src/cli/. Each tests/unit/<module>/test_*.c is one cmocka binary
# linked against the library of all non-CLI objects.

MODE     ?= release
BUILD    := build/$(MODE)
CC       ?= cc
PKGS     := yaml-0.1 sqlite3 libcrypto libssl libcurl libsodium zlib libbrotlienc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wno-unused-parameter
CFLAGS   ?= -O2 -g
ifeq ($(MODE),asan)
CFLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif
ALL_CFLAGS := -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Isrc $(PKG_CFLAGS) -MMD -MP
LIBS     := $(PKG_LIBS) -lpthread -lm

LIB_SRC  := $(sort $(shell find src -name '*.c' ! -path 'src/cli/*'))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libdavit.a
BIN      := $(BUILD)/davit

UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)

FUZZ_SECONDS ?= 60

.PHONY: all check unit e2e asan fuzz clean bench lint
all: davit

davit: $(BIN)
ifeq ($(MODE),release)
	@cp $(BIN) davit.tmp && mv -f davit.tmp davit
endif

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LIBS) -lcmocka

unit-bins: $(UNIT_BIN)

check: davit unit-bins lint
	DAVIT_BIN=$(abspath $(BIN)) BUILD_DIR=$(BUILD) bash scripts/check.sh all $(UNIT_BIN)

unit: davit unit-bins
	DAVIT_BIN=$(abspath $(BIN)) BUILD_DIR=$(BUILD) bash scripts/check.sh unit $(UNIT_BIN)

e2e: davit
	DAVIT_BIN=$(abspath $(BIN)) BUILD_DIR=$(BUILD) bash scripts/check.sh e2e

asan:
	$(MAKE) MODE=asan check

lint:
	@bash scripts/lint.sh

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

bench: davit
	bash bench/run.sh

clean:
	rm -rf build davit

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
