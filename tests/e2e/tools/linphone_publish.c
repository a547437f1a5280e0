/*
 * linphone_publish: a liblinphone client that registers and PUBLISHes its presence as "away".
 *
 * linphonec has no command to set its own presence (tests/e2e: see the presence tests), so the
 * end-to-end test compiles this at run time against Debian's liblinphone-dev:
 *
 *   gcc -o linphone_publish linphone_publish.c $(pkg-config --cflags --libs linphone) -llinphone
 *
 * (Debian's linphone.pc names no -llinphone in Libs, hence the explicit one.)
 *
 * Usage:
 *   linphone_publish --dir DIR --local-port PORT --server-port PORT --domain DOMAIN \
 *                    --user USER --password PASSWORD [--timeout SECONDS] [--verbose]
 *
 * Everything on 127.0.0.1 over UDP; DIR holds the linphonerc, the database and the log. The
 * program prints one line per step on stdout, flushed at once (liblinphone's log goes to
 * DIR/linphone.log, progress notes to stderr):
 *   REGISTERED       the REGISTER was answered 200
 *   PUBLISHED        a PUBLISH carrying the "away" presence model was answered 200
 *   UNPUBLISHED      after stdin closed (or the timeout): the PUBLISH with Expires 0 is out
 *                    (liblinphone reports "cleared" on sending it, not on its answer)
 *   UNREGISTERED     then the un-REGISTER was answered
 *   ERROR <text>     something failed; the exit code is then 1
 * It keeps running after PUBLISHED until stdin reaches end of file or --timeout seconds
 * (default 60) have passed since the start, then un-PUBLISHes, un-REGISTERs and exits 0.
 */

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linphone/core.h>
#include <linphone/factory.h>
#include <linphone/lpconfig.h>

static LinphoneRegistrationState reg_state = LinphoneRegistrationNone;
static int published = 0;         /* the presence PUBLISH was answered 200 */
static int unpublished = 0;       /* the un-PUBLISH (Expires 0) was sent */
static int publish_failed = 0;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_registration(LinphoneAccount *account, LinphoneRegistrationState state,
                            const char *message) {
    (void)account;
    reg_state = state;
    fprintf(stderr, "linphone_publish: registration state %s (%s)\n",
            linphone_registration_state_to_string(state), message ? message : "");
}

/* The account's own presence PUBLISH is an internal LinphoneEvent: liblinphone 5.1 reports its
 * state to no callback (publish_state_changed is "only from LinphoneEvent api"), only in its log:
 *   "LinphoneEvent [0x...] moving from [LinphonePublishProgress] to publish state LinphonePublishOk"
 * The account publishes nothing else here, so that message is the 200 to our PUBLISH. */
static void on_log(LinphoneLoggingService *service, const char *domain, LinphoneLogLevel level,
                   const char *message) {
    (void)service;
    (void)domain;
    (void)level;
    if (message == NULL || strstr(message, "to publish state ") == NULL)
        return;
    if (strstr(message, "to publish state LinphonePublishOk") != NULL)
        published = 1;
    else if (strstr(message, "to publish state LinphonePublishError") != NULL)
        publish_failed = 1;
    else if (strstr(message, "to publish state LinphonePublishCleared") != NULL)
        unpublished = 1;
}

/* 1 once stdin has reached end of file (or failed); never blocks */
static int stdin_closed(void) {
    struct pollfd p = {.fd = 0, .events = POLLIN};
    char buf[256];
    while (poll(&p, 1, 0) > 0) {
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n == 0)
                return 1;
            if (n < 0)
                return errno != EINTR && errno != EAGAIN;
            continue; /* anything written to stdin is ignored */
        }
        return (p.revents & (POLLERR | POLLNVAL)) != 0;
    }
    return 0;
}

static void iterate_for(LinphoneCore *core, double seconds) {
    double end = now_s() + seconds;
    while (now_s() < end) {
        linphone_core_iterate(core);
        usleep(20000);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: linphone_publish --dir DIR --local-port PORT --server-port PORT "
            "--domain DOMAIN --user USER --password PASSWORD [--timeout SECONDS] [--verbose]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *domain = NULL, *user = NULL, *password = NULL;
    int local_port = 0, server_port = 0, verbose = 0;
    double timeout = 60;
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},     {"local-port", required_argument, NULL, 'l'},
        {"server-port", required_argument, NULL, 's'}, {"domain", required_argument, NULL, 'D'},
        {"user", required_argument, NULL, 'u'},    {"password", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'}, {"verbose", no_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'l': local_port = atoi(optarg); break;
        case 's': server_port = atoi(optarg); break;
        case 'D': domain = optarg; break;
        case 'u': user = optarg; break;
        case 'p': password = optarg; break;
        case 't': timeout = atof(optarg); break;
        case 'v': verbose = 1; break;
        default: usage();
        }
    }
    if (!dir || !domain || !user || !password || local_port <= 0 || server_port <= 0 ||
        timeout <= 0)
        usage();
    double deadline = now_s() + timeout;

    char path[4096], value[4096];
    LinphoneFactory *factory = linphone_factory_get();
    LinphoneLoggingService *logging = linphone_logging_service_get();
    linphone_logging_service_set_log_file(logging, dir, "linphone.log", 10 * 1024 * 1024);
    /* Message level at least: on_log needs liblinphone's event-state messages */
    linphone_logging_service_set_log_level(logging,
                                           verbose ? LinphoneLogLevelDebug : LinphoneLogLevelMessage);
    LinphoneLoggingServiceCbs *log_cbs = linphone_factory_create_logging_service_cbs(factory);
    linphone_logging_service_cbs_set_log_message_written(log_cbs, on_log);
    linphone_logging_service_add_callbacks(logging, log_cbs);
    linphone_logging_service_cbs_unref(log_cbs);

    /* the settings that must be in place before the core starts: UDP on 127.0.0.1:PORT only,
     * no network monitoring (it would hold registration back), no video, storage in DIR */
    snprintf(path, sizeof path, "%s/linphonerc", dir);
    LinphoneConfig *config = linphone_factory_create_config(factory, path);
    linphone_config_set_int(config, "sip", "sip_port", local_port);
    linphone_config_set_int(config, "sip", "sip_tcp_port", 0);
    linphone_config_set_int(config, "sip", "sip_tls_port", 0);
    linphone_config_set_string(config, "sip", "bind_address", "127.0.0.1");
    linphone_config_set_int(config, "sip", "register_only_when_network_is_up", 0);
    linphone_config_set_int(config, "sip", "auto_net_state_mon", 0);
    linphone_config_set_string(config, "net", "bind_address", "127.0.0.1");
    linphone_config_set_int(config, "video", "enabled", 0);
    linphone_config_set_int(config, "video", "capture", 0);
    linphone_config_set_int(config, "video", "display", 0);
    snprintf(value, sizeof value, "%s/linphone.db", dir);
    linphone_config_set_string(config, "storage", "uri", value);
    linphone_config_sync(config);

    LinphoneCore *core = linphone_factory_create_core_with_config_3(factory, config, NULL);
    linphone_config_unref(config);
    if (core == NULL) {
        say("ERROR cannot create the LinphoneCore");
        return 1;
    }
    linphone_core_set_use_files(core, TRUE); /* no soundcard needed */
    linphone_core_enable_video_capture(core, FALSE);
    linphone_core_enable_video_display(core, FALSE);

    if (linphone_core_start(core) != 0) {
        say("ERROR linphone_core_start failed");
        linphone_core_unref(core);
        return 1;
    }

    /* presence "away" before the account registers: every PUBLISH it sends carries it (set
     * after registration, it would race the first PUBLISH of the default "online" model) */
    LinphonePresenceModel *model =
        linphone_presence_model_new_with_activity(LinphonePresenceActivityAway, NULL);
    linphone_core_set_presence_model(core, model);
    linphone_presence_model_unref(model);

    /* the account: identity sip:USER@DOMAIN, registrar and outbound proxy the server */
    LinphoneAuthInfo *auth =
        linphone_factory_create_auth_info(factory, user, NULL, password, NULL, NULL, NULL);
    linphone_core_add_auth_info(core, auth);
    linphone_auth_info_unref(auth);

    LinphoneAccountParams *params = linphone_core_create_account_params(core);
    snprintf(value, sizeof value, "sip:%s@%s", user, domain);
    LinphoneAddress *identity = linphone_factory_create_address(factory, value);
    snprintf(value, sizeof value, "sip:127.0.0.1:%d;transport=udp", server_port);
    LinphoneAddress *server = linphone_factory_create_address(factory, value);
    if (identity == NULL || server == NULL) {
        say("ERROR bad identity or server address");
        return 1;
    }
    linphone_account_params_set_identity_address(params, identity);
    linphone_account_params_set_server_address(params, server);
    linphone_account_params_set_outbound_proxy_enabled(params, TRUE); /* PUBLISH goes there too */
    linphone_account_params_set_register_enabled(params, TRUE);
    linphone_account_params_set_expires(params, 120);
    linphone_account_params_set_publish_enabled(params, TRUE);
    linphone_account_params_set_publish_expires(params, 120);
    linphone_address_unref(identity);
    linphone_address_unref(server);

    LinphoneAccount *account = linphone_core_create_account(core, params);
    linphone_account_params_unref(params);
    LinphoneAccountCbs *account_cbs = linphone_factory_create_account_cbs(factory);
    linphone_account_cbs_set_registration_state_changed(account_cbs, on_registration);
    linphone_account_add_callbacks(account, account_cbs);
    linphone_account_cbs_unref(account_cbs);
    if (linphone_core_add_account(core, account) != 0) {
        say("ERROR linphone_core_add_account failed");
        return 1;
    }
    linphone_core_set_default_account(core, account);

    int status = 0;
    /* 1. register */
    while (reg_state != LinphoneRegistrationOk && now_s() < deadline) {
        if (reg_state == LinphoneRegistrationFailed) {
            say("ERROR registration failed");
            status = 1;
            break;
        }
        linphone_core_iterate(core);
        usleep(20000);
    }
    if (status == 0 && reg_state != LinphoneRegistrationOk) {
        say("ERROR not registered within %.0f s", timeout);
        status = 1;
    }

    /* 2. the account PUBLISHes "away" once registered: wait for the 200 */
    if (status == 0) {
        say("REGISTERED");
        while (!published && !publish_failed && now_s() < deadline) {
            linphone_core_iterate(core);
            usleep(20000);
        }
        if (published) {
            say("PUBLISHED");
        } else {
            say("ERROR %s", publish_failed ? "PUBLISH failed" : "no answer to PUBLISH in time");
            status = 1;
        }
    }

    /* 3. stay until stdin closes or the time is up */
    while (status == 0 && !stdin_closed() && now_s() < deadline) {
        linphone_core_iterate(core);
        usleep(20000);
    }

    /* 4. remove the publication (PUBLISH with Expires 0) and un-REGISTER */
    if (reg_state == LinphoneRegistrationOk) {
        LinphoneAccountParams *off =
            linphone_account_params_clone(linphone_account_get_params(account));
        linphone_account_params_set_publish_enabled(off, FALSE);
        linphone_account_params_set_register_enabled(off, FALSE);
        linphone_account_set_params(account, off);
        linphone_account_params_unref(off);
        double end = now_s() + 5;
        while ((reg_state == LinphoneRegistrationOk || reg_state == LinphoneRegistrationProgress ||
                (published && !unpublished)) &&
               now_s() < end) {
            linphone_core_iterate(core);
            usleep(20000);
        }
        if (published && unpublished)
            say("UNPUBLISHED");
        if (reg_state == LinphoneRegistrationCleared)
            say("UNREGISTERED");
        else
            fprintf(stderr, "linphone_publish: un-REGISTER not confirmed\n");
        iterate_for(core, 0.2);
    }
    linphone_account_unref(account);
    linphone_core_stop(core);
    linphone_core_unref(core);
    return status;
}
