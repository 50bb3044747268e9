package dev.shardwise.core.foreign;

import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.util.ArrayList;
import java.util.List;

/**
 * Opens the first of several names a native library goes by (a versioned soname, then the development link), as the
 * FFM bindings of libmpi and oneDNN need: {@link SymbolLookup#libraryLookup} in the global arena, so the library stays
 * loaded for the life of the JVM.
 */
public final class NativeLibraries {
    private NativeLibraries() { }

    /**
     * The outcome of {@link #openFirst}: the library and the name that opened it, or neither, with every name tried.
     *
     * @param name   the name that opened, or null
     * @param lookup its symbols, or null
     * @param tried  the names that could not be opened, in order
     */
    public record Opened(String name, SymbolLookup lookup, List<String> tried) {
        /** Whether a name opened. */
        public boolean found() {
            return lookup != null;
        }
    }

    /** Tries {@code names} in order (the loader's search path, or paths) and returns the first that opens. */
    public static Opened openFirst(List<String> names) {
        List<String> tried = new ArrayList<>();
        for (String name : names) {
            try {
                return new Opened(name, SymbolLookup.libraryLookup(name, Arena.global()), List.copyOf(tried));
            } catch (IllegalArgumentException e) {
                tried.add(name);
            }
        }
        return new Opened(null, null, List.copyOf(tried));
    }
}
