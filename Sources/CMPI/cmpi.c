#include "CMPI.h"
#include <string.h>

MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Comm cmpi_comm_null(void) { return MPI_COMM_NULL; }
MPI_Datatype cmpi_float(void) { return MPI_FLOAT; }
MPI_Datatype cmpi_double(void) { return MPI_DOUBLE; }
MPI_Datatype cmpi_int32(void) { return MPI_INT32_T; }
MPI_Datatype cmpi_int64(void) { return MPI_INT64_T; }
MPI_Datatype cmpi_uint8(void) { return MPI_UINT8_T; }
MPI_Op cmpi_sum(void) { return MPI_SUM; }
MPI_Op cmpi_max(void) { return MPI_MAX; }
MPI_Op cmpi_min(void) { return MPI_MIN; }
void *cmpi_in_place(void) { return MPI_IN_PLACE; }
int cmpi_undefined(void) { return MPI_UNDEFINED; }
int cmpi_success(void) { return MPI_SUCCESS; }
int cmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
int cmpi_err_root(void) { return MPI_ERR_ROOT; }
int cmpi_err_count(void) { return MPI_ERR_COUNT; }

int cmpi_init(int *provided) {
    int flag = 0;
    MPI_Initialized(&flag);
    if (flag) {
        MPI_Query_thread(provided);
        return MPI_SUCCESS;
    }
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, provided);
}

int cmpi_is_initialized(void) { int flag = 0; MPI_Initialized(&flag); return flag; }
int cmpi_is_finalized(void) { int flag = 0; MPI_Finalized(&flag); return flag; }
int cmpi_finalize(void) { return MPI_Finalize(); }
int cmpi_set_errors_return(MPI_Comm comm) { return MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN); }

void cmpi_error_string(int code, char *buf, int len) {
    char message[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (len <= 0) return;
    if (MPI_Error_string(code, message, &n) != MPI_SUCCESS) {
        n = 0;
        message[0] = 0;
    }
    if (n >= len) n = len - 1;
    memcpy(buf, message, (size_t)n);
    buf[n] = 0;
}

void cmpi_processor_name(char *buf, int len) {
    char name[MPI_MAX_PROCESSOR_NAME];
    int n = 0;
    if (len <= 0) return;
    if (MPI_Get_processor_name(name, &n) != MPI_SUCCESS) n = 0;
    if (n >= len) n = len - 1;
    memcpy(buf, name, (size_t)n);
    buf[n] = 0;
}

int cmpi_comm_split(MPI_Comm parent, int color, int key, MPI_Comm *out) {
    *out = MPI_COMM_NULL;
    int code = MPI_Comm_split(parent, color, key, out);
    if (code != MPI_SUCCESS) return code;
    code = MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
    if (code != MPI_SUCCESS) MPI_Comm_free(out);
    return code;
}

int cmpi_comm_free(MPI_Comm *comm) { return MPI_Comm_free(comm); }
