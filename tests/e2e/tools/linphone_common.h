/*
 * linphone_common.h: what the liblinphone test clients in this folder (linphone_publish.c,
 * linphone_chat.c) share. Static functions only, for one program per translation unit; the
 * end-to-end tests compile each program with `-I tests/e2e/tools` (harness.build_linphone_tool).
 *
 * What it promises:
 *   lc_parse_args()      the common options --dir DIR --local-port PORT --server-port PORT
 *                        --domain DOMAIN --user USER --password PASSWORD [--timeout SECONDS]
 *                        (default 60) [--verbose], and the program's own through a callback;
 *                        a missing, bad or unknown option prints the usage line on stderr and
 *                        exits 2 (lc_usage(), also for the program's own checks)
 *   lc_say()             one line on stdout, flushed at once (the tests read the steps live);
 *                        every failure below is reported as "ERROR <text>" this way
 *   lc_core_new()        liblinphone's log in DIR/linphone.log (level Message, Debug with
 *                        --verbose; an optional callback sees each message) and a core that is
 *                        created but not started: UDP on 127.0.0.1:LOCAL-PORT only (no TCP, no
 *                        TLS), no network monitoring (it would hold registration back), no
 *                        video, sound from files (no soundcard), linphonerc and linphone.db in
 *                        DIR; the program may add settings before lc_core_start()
 *   lc_add_account()     the auth info USER/PASSWORD and the default account sip:USER@DOMAIN,
 *                        registrar and outbound proxy sip:127.0.0.1:SERVER-PORT;transport=udp,
 *                        REGISTER expires 120, PUBLISH (expires 120) only when asked; its
 *                        registration state is kept in lc_reg_state and noted on stderr
 *   lc_wait_registered() iterate until the REGISTER is answered 200 ("REGISTERED") or failed or
 *                        the deadline passed ("ERROR ...")
 *   lc_unregister()      un-REGISTER (and stop publishing), waiting at most 5 s;
 *                        lc_say_unregistered() then says "UNREGISTERED" if it was answered
 *   lc_finish()          release the account and stop and release the core
 * The core is driven by lc_step() (one iterate, then 20 ms of sleep); nothing here runs threads.
 */

#ifndef HEIMBUERO_LINPHONE_COMMON_H
#define HEIMBUERO_LINPHONE_COMMON_H

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linphone/core.h>
#include <linphone/factory.h>
#include <linphone/lpconfig.h>

/* the common command line */
struct lc_args {
    const char *dir, *domain, *user, *password;
    int local_port, server_port, verbose;
    double timeout;
};

static const char *lc_name = "linphone";    /* the program, for stderr and the usage line */
static const char *lc_extra_usage = "";     /* the program's own options in the usage line */
static LinphoneRegistrationState lc_reg_state = LinphoneRegistrationNone;

static inline void lc_say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static inline double lc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void lc_step(LinphoneCore *core) {
    linphone_core_iterate(core);
    usleep(20000);
}

static inline void lc_iterate_for(LinphoneCore *core, double seconds) {
    double end = lc_now() + seconds;
    while (lc_now() < end)
        lc_step(core);
}

static inline void lc_usage(void) {
    fprintf(stderr,
            "usage: %s --dir DIR --local-port PORT --server-port PORT --domain DOMAIN "
            "--user USER --password PASSWORD%s [--timeout SECONDS] [--verbose]\n",
            lc_name, lc_extra_usage);
    exit(2);
}

/* Parses argv into *a. The program's own options are `extra` (ended by a {NULL} entry; NULL for
 * none, and their short codes must not be one of dlsDuptv), each handed to on_extra(code, optarg);
 * `extra_usage` is their part of the usage line (" --to PEER ..."). */
static inline void lc_parse_args(int argc, char **argv, const char *name, const char *extra_usage,
                                 const struct option *extra,
                                 void (*on_extra)(int code, const char *arg), struct lc_args *a) {
    static const struct option common[] = {
        {"dir", required_argument, NULL, 'd'},     {"local-port", required_argument, NULL, 'l'},
        {"server-port", required_argument, NULL, 's'}, {"domain", required_argument, NULL, 'D'},
        {"user", required_argument, NULL, 'u'},    {"password", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'}, {"verbose", no_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    struct option opts[32];
    size_t n = 0;
    lc_name = name;
    lc_extra_usage = extra_usage ? extra_usage : "";
    for (const struct option *o = common; o->name != NULL; o++)
        opts[n++] = *o;
    for (const struct option *o = extra; o != NULL && o->name != NULL && n < 31; o++)
        opts[n++] = *o;
    memset(&opts[n], 0, sizeof opts[n]);

    memset(a, 0, sizeof *a);
    a->timeout = 60;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->dir = optarg; break;
        case 'l': a->local_port = atoi(optarg); break;
        case 's': a->server_port = atoi(optarg); break;
        case 'D': a->domain = optarg; break;
        case 'u': a->user = optarg; break;
        case 'p': a->password = optarg; break;
        case 't': a->timeout = atof(optarg); break;
        case 'v': a->verbose = 1; break;
        case '?': lc_usage(); break;
        default:
            if (on_extra == NULL)
                lc_usage();
            on_extra(c, optarg);
        }
    }
    if (!a->dir || !a->domain || !a->user || !a->password || a->local_port <= 0 ||
        a->server_port <= 0 || a->timeout <= 0)
        lc_usage();
}

static inline void lc_on_registration(LinphoneAccount *account, LinphoneRegistrationState state,
                                      const char *message) {
    (void)account;
    lc_reg_state = state;
    fprintf(stderr, "%s: registration state %s (%s)\n", lc_name,
            linphone_registration_state_to_string(state), message ? message : "");
}

/* The log and a configured core, not started (see the top); NULL after "ERROR ..." */
static inline LinphoneCore *lc_core_new(const struct lc_args *a,
                                        LinphoneLoggingServiceCbsLogMessageWrittenCb on_log) {
    char path[4096], value[4096];
    LinphoneFactory *factory = linphone_factory_get();
    LinphoneLoggingService *logging = linphone_logging_service_get();
    linphone_logging_service_set_log_file(logging, a->dir, "linphone.log", 10 * 1024 * 1024);
    /* Message level at least: a program's on_log may need liblinphone's event-state messages */
    linphone_logging_service_set_log_level(
        logging, a->verbose ? LinphoneLogLevelDebug : LinphoneLogLevelMessage);
    if (on_log != NULL) {
        LinphoneLoggingServiceCbs *log_cbs = linphone_factory_create_logging_service_cbs(factory);
        linphone_logging_service_cbs_set_log_message_written(log_cbs, on_log);
        linphone_logging_service_add_callbacks(logging, log_cbs);
        linphone_logging_service_cbs_unref(log_cbs);
    }

    /* the settings that must be in place before the core starts */
    snprintf(path, sizeof path, "%s/linphonerc", a->dir);
    LinphoneConfig *config = linphone_factory_create_config(factory, path);
    linphone_config_set_int(config, "sip", "sip_port", a->local_port);
    linphone_config_set_int(config, "sip", "sip_tcp_port", 0);
    linphone_config_set_int(config, "sip", "sip_tls_port", 0);
    linphone_config_set_string(config, "sip", "bind_address", "127.0.0.1");
    linphone_config_set_int(config, "sip", "register_only_when_network_is_up", 0);
    linphone_config_set_int(config, "sip", "auto_net_state_mon", 0);
    linphone_config_set_string(config, "net", "bind_address", "127.0.0.1");
    linphone_config_set_int(config, "video", "enabled", 0);
    linphone_config_set_int(config, "video", "capture", 0);
    linphone_config_set_int(config, "video", "display", 0);
    snprintf(value, sizeof value, "%s/linphone.db", a->dir);
    linphone_config_set_string(config, "storage", "uri", value);
    linphone_config_sync(config);

    LinphoneCore *core = linphone_factory_create_core_with_config_3(factory, config, NULL);
    linphone_config_unref(config);
    if (core == NULL) {
        lc_say("ERROR cannot create the LinphoneCore");
        return NULL;
    }
    linphone_core_set_use_files(core, TRUE); /* no soundcard needed */
    linphone_core_enable_video_capture(core, FALSE);
    linphone_core_enable_video_display(core, FALSE);
    return core;
}

/* 0 once started; else "ERROR ...", the core released, -1 */
static inline int lc_core_start(LinphoneCore *core) {
    if (linphone_core_start(core) != 0) {
        lc_say("ERROR linphone_core_start failed");
        linphone_core_unref(core);
        return -1;
    }
    return 0;
}

/* The auth info and the default account (see the top); NULL after "ERROR ..." */
static inline LinphoneAccount *lc_add_account(LinphoneCore *core, const struct lc_args *a,
                                              int publish) {
    char value[4096];
    LinphoneFactory *factory = linphone_factory_get();
    LinphoneAuthInfo *auth =
        linphone_factory_create_auth_info(factory, a->user, NULL, a->password, NULL, NULL, NULL);
    linphone_core_add_auth_info(core, auth);
    linphone_auth_info_unref(auth);

    LinphoneAccountParams *params = linphone_core_create_account_params(core);
    snprintf(value, sizeof value, "sip:%s@%s", a->user, a->domain);
    LinphoneAddress *identity = linphone_factory_create_address(factory, value);
    snprintf(value, sizeof value, "sip:127.0.0.1:%d;transport=udp", a->server_port);
    LinphoneAddress *server = linphone_factory_create_address(factory, value);
    if (identity == NULL || server == NULL) {
        lc_say("ERROR bad identity or server address");
        return NULL;
    }
    linphone_account_params_set_identity_address(params, identity);
    linphone_account_params_set_server_address(params, server);
    /* the other requests (PUBLISH, MESSAGE) go there too */
    linphone_account_params_set_outbound_proxy_enabled(params, TRUE);
    linphone_account_params_set_register_enabled(params, TRUE);
    linphone_account_params_set_expires(params, 120);
    linphone_account_params_set_publish_enabled(params, publish ? TRUE : FALSE);
    if (publish)
        linphone_account_params_set_publish_expires(params, 120);
    linphone_address_unref(identity);
    linphone_address_unref(server);

    LinphoneAccount *account = linphone_core_create_account(core, params);
    linphone_account_params_unref(params);
    LinphoneAccountCbs *account_cbs = linphone_factory_create_account_cbs(factory);
    linphone_account_cbs_set_registration_state_changed(account_cbs, lc_on_registration);
    linphone_account_add_callbacks(account, account_cbs);
    linphone_account_cbs_unref(account_cbs);
    if (linphone_core_add_account(core, account) != 0) {
        lc_say("ERROR linphone_core_add_account failed");
        return NULL;
    }
    linphone_core_set_default_account(core, account);
    return account;
}

/* 0 after "REGISTERED"; 1 after "ERROR ..." (failed, or not by the deadline) */
static inline int lc_wait_registered(LinphoneCore *core, double deadline, double timeout) {
    while (lc_reg_state != LinphoneRegistrationOk && lc_now() < deadline) {
        if (lc_reg_state == LinphoneRegistrationFailed) {
            lc_say("ERROR registration failed");
            return 1;
        }
        lc_step(core);
    }
    if (lc_reg_state != LinphoneRegistrationOk) {
        lc_say("ERROR not registered within %.0f s", timeout);
        return 1;
    }
    lc_say("REGISTERED");
    return 0;
}

/* When registered: turns REGISTER and PUBLISH off and iterates for at most 5 s while the
 * registration is not yet cleared or busy() (may be NULL) says more is pending; then 1.
 * 0 (and nothing done) when not registered. */
static inline int lc_unregister(LinphoneCore *core, LinphoneAccount *account, int (*busy)(void)) {
    if (lc_reg_state != LinphoneRegistrationOk)
        return 0;
    LinphoneAccountParams *off =
        linphone_account_params_clone(linphone_account_get_params(account));
    linphone_account_params_set_publish_enabled(off, FALSE);
    linphone_account_params_set_register_enabled(off, FALSE);
    linphone_account_set_params(account, off);
    linphone_account_params_unref(off);
    double end = lc_now() + 5;
    while ((lc_reg_state == LinphoneRegistrationOk ||
            lc_reg_state == LinphoneRegistrationProgress || (busy != NULL && busy())) &&
           lc_now() < end)
        lc_step(core);
    return 1;
}

/* "UNREGISTERED" if the un-REGISTER was answered, else a note on stderr */
static inline void lc_say_unregistered(void) {
    if (lc_reg_state == LinphoneRegistrationCleared)
        lc_say("UNREGISTERED");
    else
        fprintf(stderr, "%s: un-REGISTER not confirmed\n", lc_name);
}

static inline void lc_finish(LinphoneCore *core, LinphoneAccount *account) {
    linphone_account_unref(account);
    linphone_core_stop(core);
    linphone_core_unref(core);
}

#endif
