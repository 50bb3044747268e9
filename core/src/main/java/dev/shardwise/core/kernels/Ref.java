package dev.shardwise.core.kernels;

import java.lang.foreign.ValueLayout;

/** Element access for the float64 reference kernels: {@code [row, col]} of a {@link Rows} of f64. */
final class Ref {
    private Ref() { }

    private static final ValueLayout.OfDouble D = ValueLayout.JAVA_DOUBLE_UNALIGNED;

    static double get(Rows r, int row, int col) {
        return r.segment().get(D, r.row(row) + 8L * col);
    }

    static void set(Rows r, int row, int col, double v) {
        r.segment().set(D, r.row(row) + 8L * col, v);
    }

    static void add(Rows r, int row, int col, double v) {
        long at = r.row(row) + 8L * col;
        r.segment().set(D, at, r.segment().get(D, at) + v);
    }

    /** Element {@code i} of a one-row (flat) tensor. */
    static double get(Rows r, long i) {
        return r.segment().get(D, r.base() + 8L * i);
    }

    static void set(Rows r, long i, double v) {
        r.segment().set(D, r.base() + 8L * i, v);
    }

    static void add(Rows r, long i, double v) {
        long at = r.base() + 8L * i;
        r.segment().set(D, at, r.segment().get(D, at) + v);
    }
}
