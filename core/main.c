/* luasmtpd — an SMTP server whose policies are Lua. See README.md. */
#include "lua/config.h"
#include "base/log.h"
#include "lua/lua_guard.h"
#include "lua/lua_runtime.h"
#include "lua/policy_lua.h"
#include "lua/server_ops.h"
#include "net/master.h"
#include "base/metrics.h"
#include "net/server.h"
#include "smtp/session.h"

#include <getopt.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LUASMTPD_VERSION "0.1.0"

_Static_assert(HOOK_COUNT == METRICS_HOOKS, "base/metrics.c counts and names every hook");

struct cli {
	bool check;
	unsigned workers;
	char *listen[CONFIG_MAX_LISTEN];
	size_t nlisten;
	const char *script;
};

static void usage(FILE *f)
{
	fputs("usage: luasmtpd [options] SCRIPT\n"
	      "  -t, --check              load the script and report errors, then exit 0/1\n"
	      "      --listen HOST:PORT   listen here instead of the script's `listen` (repeatable)\n"
	      "      --workers N          worker processes sharing the listeners (default 1: no master)\n"
	      "      --log-level LEVEL    debug, info, warn or error (default info)\n"
	      "      --log-flush MODE     batch: write log lines once per event-loop turn (default);\n"
	      "                           line: write every line at once\n"
	      "  -h, --help               this text\n"
	      "  -V, --version            the version\n",
	      f);
}

/* Returns 0 to run, or an exit code + 1 when done (usage errors exit 2). */
static int cli_parse(int argc, char **argv, struct cli *cli)
{
	static const struct option longopts[] = {
		{"check", no_argument, NULL, 't'},
		{"listen", required_argument, NULL, 'l'},
		{"workers", required_argument, NULL, 'w'},
		{"log-level", required_argument, NULL, 'L'},
		{"log-flush", required_argument, NULL, 'F'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "thV", longopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			cli->check = true;
			break;
		case 'l':
			if (cli->nlisten == CONFIG_MAX_LISTEN) {
				fprintf(stderr, "luasmtpd: too many --listen addresses\n");
				return 3;
			}
			cli->listen[cli->nlisten++] = optarg;
			break;
		case 'w': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 64) {
				fprintf(stderr, "luasmtpd: --workers %s: expected 1 to 64\n", optarg);
				return 3;
			}
			cli->workers = (unsigned)n;
			break;
		}
		case 'L':
			if (!log_parse_level(optarg, &log_min_level)) {
				fprintf(stderr, "luasmtpd: --log-level %s: expected debug, info, warn or error\n",
				        optarg);
				return 3;
			}
			break;
		case 'F':
			if (!log_parse_flush_mode(optarg, &log_flush_mode)) {
				fprintf(stderr, "luasmtpd: --log-flush %s: expected batch or line\n", optarg);
				return 3;
			}
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			puts("luasmtpd " LUASMTPD_VERSION);
			return 1;
		default:
			usage(stderr);
			return 3;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 3;
	}
	cli->script = argv[optind];
	return 0;
}

/* Each session is a descriptor and the usual soft limit (1,024) is far
 * below what one process can serve: take the hard limit, as Redis does. */
static void main_raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
	struct cli cli = {0};
	int rc = cli_parse(argc, argv, &cli);
	if (rc)
		return rc - 1;
	signal(SIGPIPE, SIG_IGN);
	log_init();
	main_raise_fd_limit();
	metrics_init();
	metrics_count_memory(lua_guard_memory_used);
	char err[1024];
	struct server srv = {0};
	srv.loop = ev_default_loop(EVFLAG_AUTO);
	srv.ops = &lua_server_ops;
	srv.accept_conn = smtp_session_accept;
	srv.script = cli.script;
	srv.listen_override = cli.listen;
	srv.noverride = cli.nlisten;
	smtp_policy_use(&policy_lua);
	if (!lua_runtime_init(argc, argv, err, sizeof err) ||
	    !(srv.cfg = srv.ops->load(&srv, err, sizeof err))) {
		log_kv(LOG_ERROR, NULL, "cannot load the script", "script", cli.script, "error", err, NULL);
		if (cli.check)
			fprintf(stderr, "luasmtpd: %s\n", err);
		lua_runtime_close();
		return 1;
	}
	if (cli.check) {
		printf("luasmtpd: %s is ok\n", cli.script);
		server_free(&srv);
		lua_runtime_close();
		return 0;
	}
	if (!server_listen(&srv, err, sizeof err)) {
		log_kv(LOG_ERROR, NULL, "cannot listen", "error", err, NULL);
		server_free(&srv);
		lua_runtime_close();
		return 1;
	}
	const char *metrics = config_of(srv.cfg)->listeners[0].metrics;
	if (metrics && !metrics_listen(srv.loop, metrics, err, sizeof err)) {
		log_kv(LOG_ERROR, NULL, "cannot serve metrics", "error", err, NULL);
		server_free(&srv);
		lua_runtime_close();
		return 1;
	}
	if (cli.workers > 1) {
		rc = master_run(&srv, cli.workers);
	} else if (!server_drop_privileges(&srv, err, sizeof err)) {
		log_kv(LOG_ERROR, NULL, "cannot drop privileges", "error", err, NULL);
		rc = 1;
	} else {
		server_run(&srv);
	}
	server_free(&srv);
	lua_runtime_close();
	return rc;
}
