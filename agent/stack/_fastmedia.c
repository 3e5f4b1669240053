/* The per-datagram media path in one C call each way (see fastroute.py).
 *
 * Python decides whether a packet may take this path: it builds a *route*
 * holding the objects the ordinary path would consult and the values they
 * must still have (guards). Here, per packet, the guards are read again and,
 * when all still hold, the mechanical work is done without the interpreter:
 * the RTP header written, libsrtp called (through the function pointer of
 * pylibsrtp's own compiled binding), the socket read or written. When any
 * guard fails, nothing is done and the caller takes the ordinary path, which
 * is the reference: this module holds no policy of its own.
 *
 * No libraries beyond libc and Python's C API; libsrtp comes in as pointers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t, void *, int *) */
typedef int (*srtp_fn)(void *ctx, void *packet, int *length);

enum { GUARD_IS = 0, GUARD_FALSY = 1, GUARD_ITEM_IS = 2 };

/* Larger packets go the ordinary way; RTP audio is a few hundred bytes. */
#define PACKET_ROOM 2048
/* SRTP_MAX_TRAILER_LEN of libsrtp 2 (tag, MKI) is 144 */
#define TRAILER_ROOM 160
#define DATAGRAM_ROOM 65536
/* as icenet._READS_PER_WAKEUP and icenet._ON_TIME_S */
#define READS_PER_WAKEUP 64
#define ON_TIME_S 0.005

static PyObject *str_last_received;

/* -- guards ---------------------------------------------------------------- */

/* 1: every guard holds; 0: one does not (or cannot be read); -1: malformed. */
static int guards_hold(PyObject *guards) {
    if (!PyTuple_Check(guards)) {
        PyErr_SetString(PyExc_TypeError, "guards must be a tuple");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(guards);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *guard = PyTuple_GET_ITEM(guards, i);
        if (!PyTuple_Check(guard) || PyTuple_GET_SIZE(guard) != 5) {
            PyErr_SetString(PyExc_TypeError,
                            "a guard is (obj, name, kind, expected, key)");
            return -1;
        }
        PyObject *value = PyObject_GetAttr(PyTuple_GET_ITEM(guard, 0),
                                           PyTuple_GET_ITEM(guard, 1));
        if (value == NULL) {
            PyErr_Clear();
            return 0;
        }
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(guard, 2));
        PyObject *expected = PyTuple_GET_ITEM(guard, 3);
        int ok = 0;
        if (kind == GUARD_IS) {
            ok = value == expected;
        } else if (kind == GUARD_FALSY) {
            int truth = PyObject_IsTrue(value);
            if (truth < 0) {
                PyErr_Clear();
            }
            ok = truth == 0;
        } else if (kind == GUARD_ITEM_IS && PyDict_CheckExact(value)) {
            PyObject *item =
                PyDict_GetItemWithError(value, PyTuple_GET_ITEM(guard, 4));
            if (item == NULL && PyErr_Occurred()) {
                PyErr_Clear();
            }
            ok = item == expected;
        } else if (PyErr_Occurred()) {
            PyErr_Clear();
        }
        Py_DECREF(value);
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static PyObject *check(PyObject *module, PyObject *guards) {
    int held = guards_hold(guards);
    if (held < 0) {
        return NULL;
    }
    return PyBool_FromLong(held);
}

static int pointer_arg(PyObject *value, void **out) {
    *out = PyLong_AsVoidPtr(value);
    return !(*out == NULL && PyErr_Occurred());
}

/* -- addresses ------------------------------------------------------------- */

static PyObject *sockaddr(PyObject *module, PyObject *args) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port)) {
        return NULL;
    }
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    memset(&v4, 0, sizeof v4);
    memset(&v6, 0, sizeof v6);
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v4, sizeof v4);
    }
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return PyBytes_FromStringAndSize((const char *)&v6, sizeof v6);
    }
    Py_RETURN_NONE; /* a scoped or named host: the ordinary path's */
}

/* (host, port) as Python's socket module gives it (getnameinfo, numeric). */
static PyObject *address_tuple(const struct sockaddr_storage *ss,
                               socklen_t length) {
    char host[NI_MAXHOST];
    int port;
    if (ss->ss_family == AF_INET) {
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    } else {
        return NULL;
    }
    if (getnameinfo((const struct sockaddr *)ss, length, host, sizeof host,
                    NULL, 0, NI_NUMERICHOST) != 0) {
        return NULL;
    }
    return Py_BuildValue("(si)", host, port);
}

/* -- sending --------------------------------------------------------------- */

/* send_rtp(route, second_byte, seq, timestamp, ssrc, payload)
 *
 * route: (guards, fd, sockaddr, protect, srtp, queue, error_received, addr)
 * Returns True when the packet was handled as the ordinary path would have
 * (sent; queued on the transport when the socket was full; a socket error
 * reported to error_received), None when the caller must take the ordinary
 * path (a guard failed, or the packet does not fit: nothing was done). */
static PyObject *send_rtp(PyObject *module, PyObject *const *args,
                          Py_ssize_t nargs) {
    if (nargs != 6 || !PyTuple_Check(args[0]) ||
        PyTuple_GET_SIZE(args[0]) != 8 || !PyBytes_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "send_rtp(route, second_byte, seq, timestamp, ssrc, "
                        "payload: bytes)");
        return NULL;
    }
    PyObject *route = args[0];
    int held = guards_hold(PyTuple_GET_ITEM(route, 0));
    if (held <= 0) {
        return held < 0 ? NULL : Py_NewRef(Py_None);
    }
    unsigned long second = PyLong_AsUnsignedLong(args[1]);
    unsigned long seq = PyLong_AsUnsignedLong(args[2]);
    unsigned long timestamp = PyLong_AsUnsignedLong(args[3]);
    unsigned long ssrc = PyLong_AsUnsignedLong(args[4]);
    int fd = PyLong_AsLong(PyTuple_GET_ITEM(route, 1));
    void *protect, *ctx;
    if (PyErr_Occurred() || !pointer_arg(PyTuple_GET_ITEM(route, 3), &protect) ||
        !pointer_arg(PyTuple_GET_ITEM(route, 4), &ctx)) {
        return NULL;
    }
    PyObject *address = PyTuple_GET_ITEM(route, 2);
    Py_ssize_t size = PyBytes_GET_SIZE(args[5]);
    if (!PyBytes_Check(address) || size > PACKET_ROOM - 12 - TRAILER_ROOM) {
        Py_RETURN_NONE;
    }
    unsigned char packet[PACKET_ROOM];
    packet[0] = 0x80; /* version 2, no padding, extension or CSRC */
    packet[1] = (unsigned char)second;
    packet[2] = (unsigned char)(seq >> 8);
    packet[3] = (unsigned char)seq;
    for (int i = 0; i < 4; i++) {
        packet[4 + i] = (unsigned char)(timestamp >> (24 - 8 * i));
        packet[8 + i] = (unsigned char)(ssrc >> (24 - 8 * i));
    }
    memcpy(packet + 12, PyBytes_AS_STRING(args[5]), (size_t)size);
    int length = (int)size + 12;
    if (((srtp_fn)protect)(ctx, packet, &length) != 0) {
        Py_RETURN_NONE; /* the ordinary path raises libsrtp's error */
    }
    ssize_t sent;
    do {
        sent = sendto(fd, packet, (size_t)length, 0,
                      (const struct sockaddr *)PyBytes_AS_STRING(address),
                      (socklen_t)PyBytes_GET_SIZE(address));
    } while (sent < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (sent >= 0) {
        Py_RETURN_TRUE;
    }
    if (PyErr_Occurred()) {
        return NULL; /* a signal handler raised */
    }
    PyObject *result;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        /* as asyncio's transport does: queued behind what the kernel holds */
        result = PyObject_CallFunction(PyTuple_GET_ITEM(route, 5), "y#O",
                                       packet, (Py_ssize_t)length,
                                       PyTuple_GET_ITEM(route, 7));
    } else {
        PyObject *error = PyObject_CallFunction(PyExc_OSError, "is", errno,
                                                strerror(errno));
        if (error == NULL) {
            return NULL;
        }
        result = PyObject_CallOneArg(PyTuple_GET_ITEM(route, 6), error);
        Py_DECREF(error);
    }
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_TRUE;
}

/* -- receiving ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int fd;
    PyObject *deliver;        /* deliver(data, addr, at, True): ordinary path */
    PyObject *resolve;        /* resolve() -> route or None */
    PyObject *error_received; /* error_received(OSError) */
    PyObject *route;          /* the last resolved route, or None */
    struct sockaddr_storage last_from;
    socklen_t last_from_length;
    PyObject *last_address; /* (host, port) of last_from */
    unsigned long long fast;
    unsigned long long ordinary;
} Reader;

static int reader_init(Reader *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"fd", "deliver", "resolve", "error_received",
                               NULL};
    int fd;
    PyObject *deliver, *resolve, *error_received;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOOO", keywords, &fd,
                                     &deliver, &resolve, &error_received)) {
        return -1;
    }
    self->fd = fd;
    Py_XSETREF(self->deliver, Py_NewRef(deliver));
    Py_XSETREF(self->resolve, Py_NewRef(resolve));
    Py_XSETREF(self->error_received, Py_NewRef(error_received));
    Py_XSETREF(self->route, Py_NewRef(Py_None));
    Py_CLEAR(self->last_address);
    self->last_from_length = 0;
    return 0;
}

static int reader_traverse(Reader *self, visitproc visit, void *arg) {
    Py_VISIT(self->deliver);
    Py_VISIT(self->resolve);
    Py_VISIT(self->error_received);
    Py_VISIT(self->route);
    Py_VISIT(self->last_address);
    return 0;
}

static int reader_clear(Reader *self) {
    Py_CLEAR(self->deliver);
    Py_CLEAR(self->resolve);
    Py_CLEAR(self->error_received);
    Py_CLEAR(self->route);
    Py_CLEAR(self->last_address);
    return 0;
}

static void reader_dealloc(Reader *self) {
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static double clock_seconds(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* The route's guards hold, resolving once per wake-up when they do not:
 * the route (borrowed) or NULL with no error set (take the ordinary path). */
static PyObject *current_route(Reader *self, int *resolved) {
    for (;;) {
        PyObject *route = self->route;
        if (route != NULL && PyTuple_Check(route) &&
            PyTuple_GET_SIZE(route) == 8) {
            int held = guards_hold(PyTuple_GET_ITEM(route, 0));
            if (held > 0) {
                return route;
            }
            if (held < 0) {
                PyErr_WriteUnraisable((PyObject *)self);
            }
        }
        if (*resolved) {
            return NULL;
        }
        *resolved = 1;
        PyObject *fresh = PyObject_CallNoArgs(self->resolve);
        if (fresh == NULL) {
            PyErr_WriteUnraisable(self->resolve);
            fresh = Py_NewRef(Py_None);
        }
        Py_SETREF(self->route, fresh);
    }
}

/* One SRTP datagram on the route: 1 taken, 0 the ordinary path's, -1 error.
 * route: (guards, expected_from, received_on, key, connection, unprotect,
 *         srtp, rtp_received) */
static int take_srtp(PyObject *route, const unsigned char *data,
                     Py_ssize_t size, PyObject *from, PyObject *at) {
    PyObject *expected = PyTuple_GET_ITEM(route, 1);
    if (expected != Py_None) {
        int same = PyObject_RichCompareBool(from, expected, Py_EQ);
        if (same <= 0) {
            return same;
        }
    }
    void *unprotect, *ctx;
    if (!pointer_arg(PyTuple_GET_ITEM(route, 5), &unprotect) ||
        !pointer_arg(PyTuple_GET_ITEM(route, 6), &ctx)) {
        return -1;
    }
    if (size > PACKET_ROOM) {
        return 0;
    }
    unsigned char plain[PACKET_ROOM];
    memcpy(plain, data, (size_t)size);
    int length = (int)size;
    if (((srtp_fn)unprotect)(ctx, plain, &length) != 0) {
        return 0; /* the ordinary path tries the previous keys, counts it */
    }
    /* As IceMediaPath.media_received: the pair heard, the connection heard. */
    PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(route, 3), from);
    if (key == NULL) {
        return -1;
    }
    int failed = PyDict_SetItem(PyTuple_GET_ITEM(route, 2), key, at);
    Py_DECREF(key);
    if (failed ||
        PyObject_SetAttr(PyTuple_GET_ITEM(route, 4), str_last_received, at)) {
        return -1;
    }
    if (length < 12 || plain[0] >> 6 != 2) {
        return 1; /* not RTP version 2 (RFC 3550 §5.1): dropped, as there */
    }
    unsigned long seq = ((unsigned long)plain[2] << 8) | plain[3];
    unsigned long timestamp = 0, ssrc = 0;
    for (int i = 0; i < 4; i++) {
        timestamp = (timestamp << 8) | plain[4 + i];
        ssrc = (ssrc << 8) | plain[8 + i];
    }
    PyObject *call[5] = {
        PyBytes_FromStringAndSize((const char *)plain, length),
        PyLong_FromUnsignedLong(ssrc), PyLong_FromUnsignedLong(seq),
        PyLong_FromUnsignedLong(timestamp), at};
    PyObject *result = NULL;
    if (call[0] != NULL && call[1] != NULL && call[2] != NULL &&
        call[3] != NULL) {
        result = PyObject_Vectorcall(PyTuple_GET_ITEM(route, 7), call, 5, NULL);
    }
    for (int i = 0; i < 4; i++) {
        Py_XDECREF(call[i]);
    }
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 1;
}

static PyObject *reader_call(Reader *self, PyObject *args, PyObject *kwargs) {
    /* One realtime-to-monotonic offset per wake-up (microseconds apart). */
    double woke = clock_seconds(CLOCK_MONOTONIC);
    double offset = clock_seconds(CLOCK_REALTIME) - woke;
    int resolved = 0;
    /* one per thread: each thread's event loop reads its own sockets */
    static _Thread_local unsigned char data[DATAGRAM_ROOM];
    for (int read = 0; read < READS_PER_WAKEUP; read++) {
        struct sockaddr_storage from;
        char control[CMSG_SPACE(sizeof(struct timespec))];
        struct iovec vector = {data, sizeof data};
        struct msghdr message;
        memset(&message, 0, sizeof message);
        message.msg_name = &from;
        message.msg_namelen = sizeof from;
        message.msg_iov = &vector;
        message.msg_iovlen = 1;
        message.msg_control = control;
        message.msg_controllen = sizeof control;
        ssize_t size = recvmsg(self->fd, &message, 0);
        if (size < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() != 0) {
                    return NULL;
                }
                read--;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                Py_RETURN_NONE;
            }
            /* As asyncio's transport does: an ICMP error on UDP. */
            PyObject *error = PyObject_CallFunction(PyExc_OSError, "is", errno,
                                                    strerror(errno));
            if (error == NULL) {
                return NULL;
            }
            PyObject *result = PyObject_CallOneArg(self->error_received, error);
            Py_DECREF(error);
            if (result == NULL) {
                return NULL;
            }
            Py_DECREF(result);
            Py_RETURN_NONE;
        }
        double arrived = 0.0;
        int stamped = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c != NULL;
             c = CMSG_NXTHDR(&message, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
                c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                struct timespec stamp;
                memcpy(&stamp, CMSG_DATA(c), sizeof stamp);
                arrived = (double)stamp.tv_sec + (double)stamp.tv_nsec * 1e-9 -
                          offset;
                stamped = 1;
                break;
            }
        }
        if (!stamped) {
            arrived = clock_seconds(CLOCK_MONOTONIC); /* ends the wake-up */
        }
        PyObject *from_address;
        if (self->last_address != NULL &&
            message.msg_namelen == self->last_from_length &&
            memcmp(&from, &self->last_from, message.msg_namelen) == 0) {
            from_address = Py_NewRef(self->last_address);
        } else {
            from_address = address_tuple(&from, message.msg_namelen);
            if (from_address == NULL) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_OSError, "unreadable source address");
                }
                return NULL;
            }
            Py_XSETREF(self->last_address, Py_NewRef(from_address));
            memcpy(&self->last_from, &from, message.msg_namelen);
            self->last_from_length = message.msg_namelen;
        }
        PyObject *at = PyFloat_FromDouble(arrived);
        if (at == NULL) {
            Py_DECREF(from_address);
            return NULL;
        }
        int taken = 0;
        /* RFC 7983 §7: 128..191 is RTP/RTCP; RFC 5761 §4: 192..208 RTCP. */
        if (size >= 12 && data[0] >= 128 && data[0] < 192 &&
            !(data[1] >= 192 && data[1] <= 208)) {
            PyObject *route = current_route(self, &resolved);
            if (route != NULL) {
                Py_INCREF(route); /* a callback may replace self->route */
                taken = take_srtp(route, data, size, from_address, at);
                Py_DECREF(route);
            }
        }
        if (taken == 0) {
            PyObject *datagram =
                PyBytes_FromStringAndSize((const char *)data, size);
            PyObject *result =
                datagram == NULL
                    ? NULL
                    : PyObject_CallFunctionObjArgs(self->deliver, datagram,
                                                   from_address, at, Py_True,
                                                   NULL);
            Py_XDECREF(datagram);
            if (result == NULL) {
                taken = -1;
            } else {
                Py_DECREF(result);
                self->ordinary++;
            }
        } else if (taken > 0) {
            self->fast++;
        }
        Py_DECREF(from_address);
        Py_DECREF(at);
        if (taken < 0) {
            return NULL;
        }
        if (woke - arrived < ON_TIME_S) {
            break; /* read on time: most likely nothing else is waiting */
        }
    }
    Py_RETURN_NONE;
}

static PyObject *reader_get_fast(Reader *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->fast);
}

static PyObject *reader_get_ordinary(Reader *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->ordinary);
}

static PyObject *reader_get_route(Reader *self, void *closure) {
    return Py_NewRef(self->route ? self->route : Py_None);
}

static int reader_set_route(Reader *self, PyObject *value, void *closure) {
    Py_XSETREF(self->route, Py_NewRef(value ? value : Py_None));
    return 0;
}

static PyGetSetDef reader_getset[] = {
    {"fast", (getter)reader_get_fast, NULL,
     "datagrams taken by the route (SRTP in, RTP to the receiver)", NULL},
    {"ordinary", (getter)reader_get_ordinary, NULL,
     "datagrams handed to the ordinary path", NULL},
    {"route", (getter)reader_get_route, (setter)reader_set_route,
     "the last resolved route (None: resolve at the next SRTP datagram)",
     NULL},
    {NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agent.stack._fastmedia.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A socket's readiness callback: reads every waiting datagram "
              "with its kernel time; SRTP on a holding route is unprotected "
              "and handed to the receiver, the rest to deliver().",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_call = (ternaryfunc)reader_call,
    .tp_getset = reader_getset,
};

/* -- a group of readers behind one epoll descriptor ------------------------ */

/* The event loop watches one descriptor for every socket of the process:
 * when any is readable, the group reads each ready one (its Reader), in one
 * callback, instead of one asyncio handle, selector key and context switch
 * per socket per wake-up. Level-triggered, as asyncio's own readers. */
typedef struct {
    PyObject_HEAD
    int epfd;
    PyObject *readers;  /* {fd: Reader} */
    PyObject *on_error; /* on_error(exception, reader): asyncio's handler */
} Group;

#define READY_PER_WAKEUP 256

static PyTypeObject GroupType;

static int group_init(Group *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"on_error", NULL};
    PyObject *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", keywords, &on_error)) {
        return -1;
    }
    if (self->epfd < 0 || self->readers == NULL) {
        self->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (self->epfd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        self->readers = PyDict_New();
        if (self->readers == NULL) {
            return -1;
        }
    }
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    return 0;
}

static PyObject *group_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Group *self = (Group *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->epfd = -1;
    }
    return (PyObject *)self;
}

static int group_traverse(Group *self, visitproc visit, void *arg) {
    Py_VISIT(self->readers);
    Py_VISIT(self->on_error);
    return 0;
}

static int group_clear(Group *self) {
    Py_CLEAR(self->readers);
    Py_CLEAR(self->on_error);
    return 0;
}

static void group_dealloc(Group *self) {
    PyObject_GC_UnTrack(self);
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    group_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *group_add(Group *self, PyObject *reader) {
    if (!PyObject_TypeCheck(reader, &ReaderType)) {
        PyErr_SetString(PyExc_TypeError, "add(reader: Reader)");
        return NULL;
    }
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the group is closed");
        return NULL;
    }
    int fd = ((Reader *)reader)->fd;
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL) {
        return NULL;
    }
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) != 0) {
        Py_DECREF(key);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int failed = PyDict_SetItem(self->readers, key, reader);
    Py_DECREF(key);
    if (failed) {
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *group_remove(Group *self, PyObject *fd_object) {
    int fd = PyLong_AsLong(fd_object);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->epfd >= 0) {
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL); /* gone already: fine */
    }
    if (self->readers != NULL && PyDict_DelItem(self->readers, fd_object) != 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            return NULL;
        }
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyObject *group_fileno(Group *self, PyObject *unused) {
    return PyLong_FromLong(self->epfd);
}

static PyObject *group_close(Group *self, PyObject *unused) {
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    if (self->readers != NULL) {
        PyDict_Clear(self->readers);
    }
    Py_RETURN_NONE;
}

static Py_ssize_t group_length(Group *self) {
    return self->readers == NULL ? 0 : PyDict_GET_SIZE(self->readers);
}

static PyObject *group_call(Group *self, PyObject *args, PyObject *kwargs) {
    if (self->epfd < 0) {
        Py_RETURN_NONE;
    }
    struct epoll_event ready[READY_PER_WAKEUP];
    int count;
    do {
        count = epoll_wait(self->epfd, ready, READY_PER_WAKEUP, 0);
    } while (count < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (count < 0) {
        return PyErr_Occurred() ? NULL : PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < count && self->readers != NULL; i++) {
        PyObject *key = PyLong_FromLong(ready[i].data.fd);
        if (key == NULL) {
            return NULL;
        }
        /* A reader removed by an earlier one's callback is skipped. */
        PyObject *reader = PyDict_GetItemWithError(self->readers, key);
        Py_DECREF(key);
        if (reader == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            continue;
        }
        Py_INCREF(reader);
        PyObject *result = reader_call((Reader *)reader, NULL, NULL);
        if (result == NULL) {
            /* As asyncio does for a callback that raised: reported, and the
             * other sockets are still read. */
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            if (traceback != NULL && value != NULL) {
                PyException_SetTraceback(value, traceback);
            }
            if (value != NULL && !PyErr_GivenExceptionMatches(
                                     value, PyExc_Exception)) {
                /* KeyboardInterrupt, SystemExit: out, as asyncio lets them */
                Py_DECREF(reader);
                PyErr_Restore(type, value, traceback);
                return NULL;
            }
            PyObject *reported =
                value == NULL ? NULL
                              : PyObject_CallFunctionObjArgs(self->on_error,
                                                             value, reader,
                                                             NULL);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            if (reported == NULL) {
                PyErr_WriteUnraisable(self->on_error);
            } else {
                Py_DECREF(reported);
            }
        } else {
            Py_DECREF(result);
        }
        Py_DECREF(reader);
    }
    Py_RETURN_NONE;
}

static PyMethodDef group_methods[] = {
    {"add", (PyCFunction)group_add, METH_O, "add(reader): watch its socket"},
    {"remove", (PyCFunction)group_remove, METH_O,
     "remove(fd): stop watching (before the socket is closed)"},
    {"fileno", (PyCFunction)group_fileno, METH_NOARGS,
     "the epoll descriptor the event loop watches"},
    {"close", (PyCFunction)group_close, METH_NOARGS,
     "close the epoll descriptor (the loop must stop watching it first)"},
    {NULL},
};

static PySequenceMethods group_sequence = {
    .sq_length = (lenfunc)group_length,
};

static PyTypeObject GroupType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agent.stack._fastmedia.Group",
    .tp_basicsize = sizeof(Group),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Readers behind one epoll descriptor: the event loop's one "
              "callback for all of them.",
    .tp_new = group_new,
    .tp_init = (initproc)group_init,
    .tp_dealloc = (destructor)group_dealloc,
    .tp_traverse = (traverseproc)group_traverse,
    .tp_clear = (inquiry)group_clear,
    .tp_call = (ternaryfunc)group_call,
    .tp_methods = group_methods,
    .tp_as_sequence = &group_sequence,
};

static PyMethodDef methods[] = {
    {"check", (PyCFunction)check, METH_O,
     "check(guards) -> whether every guard still holds"},
    {"sockaddr", (PyCFunction)sockaddr, METH_VARARGS,
     "sockaddr(host, port) -> the packed socket address, None if not numeric"},
    {"send_rtp", (PyCFunction)(void (*)(void))send_rtp, METH_FASTCALL,
     "send_rtp(route, second_byte, seq, timestamp, ssrc, payload) -> True "
     "(handled) or None (take the ordinary path)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "agent.stack._fastmedia",
    "The per-datagram media path in C (see agent/stack/fastroute.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__fastmedia(void) {
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&GroupType) < 0) {
        return NULL;
    }
    str_last_received = PyUnicode_InternFromString("last_received");
    if (str_last_received == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObjectRef(m, "Group", (PyObject *)&GroupType) < 0 ||
        PyModule_AddIntConstant(m, "GUARD_IS", GUARD_IS) < 0 ||
        PyModule_AddIntConstant(m, "GUARD_FALSY", GUARD_FALSY) < 0 ||
        PyModule_AddIntConstant(m, "GUARD_ITEM_IS", GUARD_ITEM_IS) < 0 ||
        PyModule_AddIntConstant(m, "PACKET_ROOM", PACKET_ROOM) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
