/*
 * linphone_chat: a liblinphone client that registers and sends one message to a peer: either a
 * file over Linphone's HTTP file transfer (it uploads the file to the file-transfer server,
 * digest with its SIP credentials, then sends the file-info XML in a MESSAGE,
 * application/vnd.gsma.rcs-ft-http+xml, through the SIP server), or a text.
 *
 * linphonec cannot send files (tests/e2e/test_messaging_linphone.py), so the end-to-end test
 * compiles this at run time against Debian's liblinphone-dev:
 *
 *   gcc -I. -o linphone_chat linphone_chat.c \
 *       $(pkg-config --cflags --libs linphone) -llinphone
 *
 * Usage:
 *   linphone_chat --dir DIR --local-port PORT --server-port PORT --domain DOMAIN \
 *                 --user USER --password PASSWORD --to PEER \
 *                 (--ft-url URL --file PATH [--content-type TYPE/SUBTYPE] | --text TEXT) \
 *                 [--root-ca PATH] [--imdn] [--timeout SECONDS] [--verbose]
 *
 *   --root-ca PATH  the PEM file of the CA certificates to trust for HTTPS (and SIP over TLS):
 *                   linphone_core_set_root_ca(); verification stays on. A certificate for
 *                   an IP address must name it as a DNS subjectAltName too: liblinphone 5.1
 *                   verifies with mbedtls 2.28, which cannot read iPAddress entries (the
 *                   tests' harness.self_signed_cert does both)
 *   --imdn          the message goes out in CPIM (the account's "CPIM in basic chat rooms") with
 *                   IMDN delivery and display notifications requested (im_notif_policy all);
 *                   SENT then waits for DeliveredToUser, which only the recipient's IMDN report
 *                   (RFC 5438) coming back through the SIP server brings
 *
 * Everything on 127.0.0.1 over UDP; DIR holds the linphonerc, the database and liblinphone's
 * log (DIR/linphone.log). One line per step on stdout, flushed at once:
 *   REGISTERED          the REGISTER was answered 200
 *   IMDN-ID <id>        the message's imdn.Message-ID (with --imdn)
 *   STATE <name>        every state of the chat message (InProgress, FileTransferDone, Delivered…)
 *   SENT                the upload finished (FileTransferDone, files only) and the MESSAGE was
 *                       answered 2xx (Delivered), or with --imdn reported DeliveredToUser; the
 *                       program then un-REGISTERs and exits 0
 *   UNREGISTERED        the un-REGISTER was answered
 *   ERROR <text>        something failed (NotDelivered, FileTransferError, no registration, the
 *                       timeout, default 60 s); the exit code is then 1
 * The core setup, registration and un-REGISTER are linphone_common.h's (shared with
 * linphone_publish.c); the same credentials answer the SIP server's and the file-transfer
 * server's digest challenges.
 */

#include <sys/stat.h>

#include "linphone_common.h"

static int upload_done = 0;
static int delivered = 0;          /* the MESSAGE was answered 2xx (or a later state came) */
static int delivered_to_user = 0;  /* the recipient's IMDN said delivered (or displayed) */
static int failed = 0;
static char failure[512];

/* the options of this program besides linphone_common.h's */
static const char *ft_url = NULL, *to = NULL, *file = NULL, *text = NULL, *root_ca = NULL;
static const char *content_type = "application/octet-stream";
static int imdn = 0;

static void on_option(int code, const char *arg) {
    switch (code) {
    case 'f': ft_url = arg; break;
    case 'T': to = arg; break;
    case 'F': file = arg; break;
    case 'c': content_type = arg; break;
    case 'x': text = arg; break;
    case 'r': root_ca = arg; break;
    case 'i': imdn = 1; break;
    default: lc_usage();
    }
}

static void on_message_state(LinphoneChatMessage *msg, LinphoneChatMessageState state) {
    lc_say("STATE %s", linphone_chat_message_state_to_string(state));
    switch (state) {
    case LinphoneChatMessageStateFileTransferDone:
        upload_done = 1;
        break;
    case LinphoneChatMessageStateDelivered:
        delivered = 1;
        break;
    case LinphoneChatMessageStateDeliveredToUser:
    case LinphoneChatMessageStateDisplayed:
        delivered = 1;
        delivered_to_user = 1;
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

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"ft-url", required_argument, NULL, 'f'},  {"to", required_argument, NULL, 'T'},
        {"file", required_argument, NULL, 'F'},    {"content-type", required_argument, NULL, 'c'},
        {"text", required_argument, NULL, 'x'},    {"root-ca", required_argument, NULL, 'r'},
        {"imdn", no_argument, NULL, 'i'},          {NULL, 0, NULL, 0},
    };
    struct lc_args a;
    lc_parse_args(argc, argv, "linphone_chat",
                  " --to PEER (--ft-url URL --file PATH [--content-type TYPE/SUBTYPE] | --text TEXT)"
                  " [--root-ca PATH] [--imdn]",
                  opts, on_option, &a);
    if (!to || (file == NULL) == (text == NULL) || (file != NULL && ft_url == NULL) ||
        strchr(content_type, '/') == NULL)
        lc_usage();
    double deadline = lc_now() + a.timeout;

    struct stat st;
    if (file != NULL && (stat(file, &st) != 0 || !S_ISREG(st.st_mode))) {
        lc_say("ERROR no such file: %s", file);
        return 1;
    }

    LinphoneCore *core = lc_core_new(&a, NULL);
    if (core == NULL)
        return 1;
    if (ft_url != NULL)
        linphone_core_set_file_transfer_server(core, ft_url);
    if (root_ca != NULL)
        linphone_core_set_root_ca(core, root_ca); /* HTTPS (belle-sip's http provider) too */
    if (imdn)
        linphone_im_notif_policy_enable_all(linphone_core_get_im_notif_policy(core));
    if (lc_core_start(core) != 0)
        return 1;

    LinphoneAccount *account = lc_add_account(core, &a, 0);
    if (account == NULL)
        return 1;
    if (imdn) {
        /* basic chat rooms send SIP SIMPLE (text/plain) unless the account says CPIM, and IMDN
         * needs CPIM's imdn.* headers */
        LinphoneAccountParams *cpim =
            linphone_account_params_clone(linphone_account_get_params(account));
        linphone_account_params_enable_cpim_in_basic_chat_room(cpim, TRUE);
        linphone_account_set_params(account, cpim);
        linphone_account_params_unref(cpim);
    }
    const LinphoneAddress *identity =
        linphone_account_params_get_identity_address(linphone_account_get_params(account));
    LinphoneFactory *factory = linphone_factory_get();
    char value[4096];
    snprintf(value, sizeof value, "sip:%s@%s", to, a.domain);
    LinphoneAddress *peer = linphone_factory_create_address(factory, value);
    if (peer == NULL) {
        lc_say("ERROR bad peer address");
        return 1;
    }

    /* 1. register */
    int status = lc_wait_registered(core, deadline, a.timeout);

    /* 2. a basic (one-to-one, unencrypted) chat room to the peer and one file message */
    LinphoneChatMessage *msg = NULL;
    if (status == 0) {
        LinphoneChatRoomParams *crp = linphone_core_create_default_chat_room_params(core);
        linphone_chat_room_params_set_backend(crp, LinphoneChatRoomBackendBasic);
        linphone_chat_room_params_enable_group(crp, FALSE);
        linphone_chat_room_params_enable_encryption(crp, FALSE);
        bctbx_list_t *participants = bctbx_list_append(NULL, peer);
        LinphoneChatRoom *room = linphone_core_create_chat_room_6(core, crp, identity, participants);
        bctbx_list_free(participants);
        linphone_chat_room_params_unref(crp);
        if (room == NULL) {
            lc_say("ERROR cannot create a chat room to %s", to);
            status = 1;
        } else if (text != NULL) {
            msg = linphone_chat_room_create_message_from_utf8(room, text);
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
        }
        if (msg != NULL) {
            LinphoneChatMessageCbs *cbs = linphone_factory_create_chat_message_cbs(factory);
            linphone_chat_message_cbs_set_msg_state_changed(cbs, on_message_state);
            linphone_chat_message_add_callbacks(msg, cbs);
            linphone_chat_message_cbs_unref(cbs);
            linphone_chat_message_send(msg);
            const char *id = linphone_chat_message_get_message_id(msg);
            if (imdn)
                lc_say("IMDN-ID %s", id ? id : "");
        }
    }

    /* 3. wait for the upload (files), the MESSAGE's 2xx and (--imdn) the delivery report */
    if (text != NULL)
        upload_done = 1;
#define DONE (upload_done && delivered && (!imdn || delivered_to_user))
    while (status == 0 && !DONE && !failed && lc_now() < deadline)
        lc_step(core);
    if (status == 0) {
        if (failed) {
            lc_say("ERROR %s", failure);
            status = 1;
        } else if (!DONE) {
            lc_say("ERROR not sent within %.0f s (upload %s, MESSAGE %s, IMDN %s)", a.timeout,
                   upload_done ? "done" : "not done", delivered ? "delivered" : "not delivered",
                   !imdn ? "not asked" : delivered_to_user ? "delivered" : "none");
            status = 1;
        } else {
            lc_say("SENT");
        }
    }
    if (msg != NULL)
        linphone_chat_message_unref(msg);
    linphone_address_unref(peer);

    /* 4. un-REGISTER */
    if (lc_unregister(core, account, NULL))
        lc_say_unregistered();
    lc_finish(core, account);
    return status;
}
