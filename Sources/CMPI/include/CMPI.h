#ifndef CMPI_H
#define CMPI_H
// Open MPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, ...) are macros over
// the addresses of library globals, which Swift cannot import. Every one we use is exposed here as a
// plain C function, prefixed cmpi_.
#include <mpi.h>

MPI_Comm cmpi_comm_world(void);
MPI_Comm cmpi_comm_null(void);
MPI_Datatype cmpi_float(void);
MPI_Datatype cmpi_double(void);
MPI_Datatype cmpi_int32(void);
MPI_Datatype cmpi_int64(void);
MPI_Datatype cmpi_uint8(void);
MPI_Op cmpi_sum(void);
MPI_Op cmpi_max(void);
MPI_Op cmpi_min(void);
void *cmpi_in_place(void);
int cmpi_undefined(void);
int cmpi_success(void);
int cmpi_thread_multiple(void);
// Two error codes, for tests of how MPI errors are reported.
int cmpi_err_root(void);
int cmpi_err_count(void);

// Initialises MPI with MPI_THREAD_MULTIPLE (Swift Testing runs tests on several threads) unless it is
// already initialised. Returns the MPI error code; *provided receives the thread level granted.
int cmpi_init(int *provided);
int cmpi_is_initialized(void);
int cmpi_is_finalized(void);
int cmpi_finalize(void);
// Makes MPI calls on the communicator return error codes instead of aborting, so Swift can report them.
int cmpi_set_errors_return(MPI_Comm comm);
// Writes MPI's message for an error code into buf (NUL-terminated, at most len bytes).
void cmpi_error_string(int code, char *buf, int len);
// Host name of this process as MPI sees it.
void cmpi_processor_name(char *buf, int len);
// MPI_Comm_split of parent into the ranks of equal color, ordered by key (ties by parent rank); *out gets
// the new communicator with MPI_ERRORS_RETURN set. Returns the MPI error code (*out is MPI_COMM_NULL on error).
int cmpi_comm_split(MPI_Comm parent, int color, int key, MPI_Comm *out);
// MPI_Comm_free of a communicator made by cmpi_comm_split. Returns the MPI error code.
int cmpi_comm_free(MPI_Comm *comm);

#endif
