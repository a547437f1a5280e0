/*
 * linphone_chat: a liblinphone client that registers and sends one file to a peer over
 * Linphone's HTTP file transfer: it uploads the file to the file-transfer server (digest with
 * its SIP credentials), then sends the file-info XML in a MESSAGE
 * (application/vnd.gsma.rcs-ft-http+xml) through the SIP server.
 *
 * linphonec cannot send files (tests/e2e/test_messaging_linphone.py), so the end-to-end test
 * compiles this at run time against Debian's liblinphone-dev:
 *
 *   gcc -o linphone_chat linphone_chat.c $(pkg-config --cflags --libs linphone) -llinphone
 *
 * Usage:
 *   linphone_chat --dir DIR --local-port PORT --server-port PORT --domain DOMAIN \
 *                 --user USER --password PASSWORD --ft-url URL --to PEER \
 *                 --file PATH [--content-type TYPE/SUBTYPE] [--timeout SECONDS] [--verbose]
 *
 * Everything on 127.0.0.1 over UDP; DIR holds the linphonerc, the database and liblinphone's
 * log (DIR/linphone.log). One line per step on stdout, flushed at once:
 *   REGISTERED          the REGISTER was answered 200
 *   STATE <name>        every state of the chat message (InProgress, FileTransferDone, Delivered…)
 *   SENT                the upload finished (FileTransferDone) and the MESSAGE was answered 2xx
 *                       (Delivered); the program then un-REGISTERs and exits 0
 *   UNREGISTERED        the un-REGISTER was answered
 *   ERROR <text>        something failed (NotDelivered, FileTransferError, no registration, the
 *                       timeout, default 60 s); the exit code is then 1
 */

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linphone/core.h>
#include <linphone/factory.h>
#include <linphone/lpconfig.h>

static LinphoneRegistrationState reg_state = LinphoneRegistrationNone;
static int upload_done = 0;
static int delivered = 0;
static int failed = 0;
static char failure[512];

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
    fprintf(stderr, "linphone_chat: registration state %s (%s)\n",
            linphone_registration_state_to_string(state), message ? message : "");
}

static void on_message_state(LinphoneChatMessage *msg, LinphoneChatMessageState state) {
    say("STATE %s", linphone_chat_message_state_to_string(state));
    switch (state) {
    case LinphoneChatMessageStateFileTransferDone:
        upload_done = 1;
        break;
    case LinphoneChatMessageStateDelivered:
    case LinphoneChatMessageStateDeliveredToUser:
    case LinphoneChatMessageStateDisplayed:
        delivered = 1;
        break;
    case LinphoneChatMessageStateNotDelivered:
    case LinphoneChatMessageStateFileTransferError: {
        const LinphoneErrorInfo *ei = linphone_chat_message_get_error_info(msg);
        snprintf(failure, sizeof failure, "%s (%d %s)", linphone_chat_message_state_to_string(state),
                 ei ? linphone_error_info_get_protocol_code(ei) : 0,
                 ei && linphone_error_info_get_phrase(ei) ? linphone_error_info_get_phrase(ei) : "");
        failed = 1;
        break;
    }
    default:
        break;
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: linphone_chat --dir DIR --local-port PORT --server-port PORT --domain DOMAIN "
            "--user USER --password PASSWORD --ft-url URL --to PEER --file PATH "
            "[--content-type TYPE/SUBTYPE] [--timeout SECONDS] [--verbose]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *domain = NULL, *user = NULL, *password = NULL, *ft_url = NULL;
    const char *to = NULL, *file = NULL, *content_type = "application/octet-stream";
    int local_port = 0, server_port = 0, verbose = 0;
    double timeout = 60;
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},     {"local-port", required_argument, NULL, 'l'},
        {"server-port", required_argument, NULL, 's'}, {"domain", required_argument, NULL, 'D'},
        {"user", required_argument, NULL, 'u'},    {"password", required_argument, NULL, 'p'},
        {"ft-url", required_argument, NULL, 'f'},  {"to", required_argument, NULL, 'T'},
        {"file", required_argument, NULL, 'F'},    {"content-type", required_argument, NULL, 'c'},
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
        case 'f': ft_url = optarg; break;
        case 'T': to = optarg; break;
        case 'F': file = optarg; break;
        case 'c': content_type = optarg; break;
        case 't': timeout = atof(optarg); break;
        case 'v': verbose = 1; break;
        default: usage();
        }
    }
    if (!dir || !domain || !user || !password || !ft_url || !to || !file || local_port <= 0 ||
        server_port <= 0 || timeout <= 0 || strchr(content_type, '/') == NULL)
        usage();
    double deadline = now_s() + timeout;

    struct stat st;
    if (stat(file, &st) != 0 || !S_ISREG(st.st_mode)) {
        say("ERROR no such file: %s", file);
        return 1;
    }

    char path[4096], value[4096];
    LinphoneFactory *factory = linphone_factory_get();
    LinphoneLoggingService *logging = linphone_logging_service_get();
    linphone_logging_service_set_log_file(logging, dir, "linphone.log", 10 * 1024 * 1024);
    linphone_logging_service_set_log_level(logging,
                                           verbose ? LinphoneLogLevelDebug : LinphoneLogLevelMessage);

    /* settings needed before the core starts: UDP on 127.0.0.1:PORT only, no network
     * monitoring (it would hold registration back), no video, storage in DIR */
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
    linphone_core_set_file_transfer_server(core, ft_url);

    if (linphone_core_start(core) != 0) {
        say("ERROR linphone_core_start failed");
        linphone_core_unref(core);
        return 1;
    }

    /* the account: identity sip:USER@DOMAIN, registrar and outbound proxy the server; the
     * same credentials answer the SIP server's and the file-transfer server's digest challenges */
    LinphoneAuthInfo *auth =
        linphone_factory_create_auth_info(factory, user, NULL, password, NULL, NULL, NULL);
    linphone_core_add_auth_info(core, auth);
    linphone_auth_info_unref(auth);

    LinphoneAccountParams *params = linphone_core_create_account_params(core);
    snprintf(value, sizeof value, "sip:%s@%s", user, domain);
    LinphoneAddress *identity = linphone_factory_create_address(factory, value);
    snprintf(value, sizeof value, "sip:127.0.0.1:%d;transport=udp", server_port);
    LinphoneAddress *server = linphone_factory_create_address(factory, value);
    snprintf(value, sizeof value, "sip:%s@%s", to, domain);
    LinphoneAddress *peer = linphone_factory_create_address(factory, value);
    if (identity == NULL || server == NULL || peer == NULL) {
        say("ERROR bad identity, server or peer address");
        return 1;
    }
    linphone_account_params_set_identity_address(params, identity);
    linphone_account_params_set_server_address(params, server);
    linphone_account_params_set_outbound_proxy_enabled(params, TRUE); /* MESSAGE goes there too */
    linphone_account_params_set_register_enabled(params, TRUE);
    linphone_account_params_set_expires(params, 120);
    linphone_account_params_set_publish_enabled(params, FALSE);

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

    /* 2. a basic (one-to-one, unencrypted) chat room to the peer and one file message */
    LinphoneChatMessage *msg = NULL;
    if (status == 0) {
        say("REGISTERED");
        LinphoneChatRoomParams *crp = linphone_core_create_default_chat_room_params(core);
        linphone_chat_room_params_set_backend(crp, LinphoneChatRoomBackendBasic);
        linphone_chat_room_params_enable_group(crp, FALSE);
        linphone_chat_room_params_enable_encryption(crp, FALSE);
        bctbx_list_t *participants = bctbx_list_append(NULL, peer);
        LinphoneChatRoom *room = linphone_core_create_chat_room_6(core, crp, identity, participants);
        bctbx_list_free(participants);
        linphone_chat_room_params_unref(crp);
        if (room == NULL) {
            say("ERROR cannot create a chat room to %s", to);
            status = 1;
        } else {
            char type[256];
            snprintf(type, sizeof type, "%s", content_type);
            char *slash = strchr(type, '/');
            *slash = '\0';
            const char *name = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
            LinphoneContent *content = linphone_core_create_content(core);
            linphone_content_set_type(content, type);
            linphone_content_set_subtype(content, slash + 1);
            linphone_content_set_name(content, name);
            linphone_content_set_size(content, (size_t)st.st_size);
            linphone_content_set_file_path(content, file);
            msg = linphone_chat_room_create_file_transfer_message(room, content);
            linphone_content_unref(content);
            LinphoneChatMessageCbs *cbs = linphone_factory_create_chat_message_cbs(factory);
            linphone_chat_message_cbs_set_msg_state_changed(cbs, on_message_state);
            linphone_chat_message_add_callbacks(msg, cbs);
            linphone_chat_message_cbs_unref(cbs);
            linphone_chat_message_send(msg);
        }
    }

    /* 3. wait for the upload and the MESSAGE's 2xx */
    while (status == 0 && !(upload_done && delivered) && !failed && now_s() < deadline) {
        linphone_core_iterate(core);
        usleep(20000);
    }
    if (status == 0) {
        if (failed) {
            say("ERROR %s", failure);
            status = 1;
        } else if (!(upload_done && delivered)) {
            say("ERROR not sent within %.0f s (upload %s, MESSAGE %s)", timeout,
                upload_done ? "done" : "not done", delivered ? "delivered" : "not delivered");
            status = 1;
        } else {
            say("SENT");
        }
    }
    if (msg != NULL)
        linphone_chat_message_unref(msg);
    linphone_address_unref(identity);
    linphone_address_unref(server);
    linphone_address_unref(peer);

    /* 4. un-REGISTER */
    if (reg_state == LinphoneRegistrationOk) {
        LinphoneAccountParams *off =
            linphone_account_params_clone(linphone_account_get_params(account));
        linphone_account_params_set_register_enabled(off, FALSE);
        linphone_account_set_params(account, off);
        linphone_account_params_unref(off);
        double end = now_s() + 5;
        while ((reg_state == LinphoneRegistrationOk || reg_state == LinphoneRegistrationProgress) &&
               now_s() < end) {
            linphone_core_iterate(core);
            usleep(20000);
        }
        if (reg_state == LinphoneRegistrationCleared)
            say("UNREGISTERED");
        else
            fprintf(stderr, "linphone_chat: un-REGISTER not confirmed\n");
    }
    linphone_account_unref(account);
    linphone_core_stop(core);
    linphone_core_unref(core);
    return status;
}
