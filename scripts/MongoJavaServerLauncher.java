// Tiny launcher for de.bwaldvogel:mongo-java-server used by scripts/stack.sh when
// MONGO_IMPL=mongo-java-server.
//
// Usage: java -cp '<cache>/mongo-java-server-<ver>/libs/*:<cache>/mongo-java-server-<ver>/classes-<hash>' \
//             MongoJavaServerLauncher (--h2 <file> | --memory) [host] [port]
// (<hash>: the first 16 hex digits of this file's SHA-256; scripts/bootstrap.sh compiles it there)
//
//   --h2 <file>  persistent H2 MVStore backend (mongo-java-server-h2-backend); the file is
//                created if missing and reopened on the next start. This is what stack.sh uses
//                by default, so data survives `stack.sh mongo-stop` / `mongo-start`.
//   --memory     in-memory backend (mongo-java-server-memory-backend); data is lost on stop.
// Defaults: 127.0.0.1 27017. Runs until SIGTERM/SIGINT; the shutdown hook stops the server
// (closing client connections) and then closes the backend, which commits and closes the
// MVStore so everything acknowledged before the TERM is in the file. The MVStore also
// auto-commits in the background about once a second, so a SIGKILL loses at most the last
// second or so of writes (the file itself stays consistent: MVStore is append-only).
//
// Compiled by scripts/bootstrap.sh into the cache; not part of the C build.

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;

public final class MongoJavaServerLauncher {
    private MongoJavaServerLauncher() {
    }

    private static void usage(String msg) {
        System.err.println("MongoJavaServerLauncher: " + msg);
        System.err.println("usage: MongoJavaServerLauncher (--h2 <file> | --memory) [host] [port]");
        System.exit(2);
    }

    public static void main(String[] args) throws Exception {
        String h2File = null;
        boolean memory = false;
        List<String> positional = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--h2":
                    if (i + 1 >= args.length) usage("--h2 needs a file path");
                    h2File = args[++i];
                    break;
                case "--memory":
                    memory = true;
                    break;
                default:
                    if (args[i].startsWith("--")) usage("unknown option " + args[i]);
                    positional.add(args[i]);
            }
        }
        if (memory == (h2File != null)) usage("give exactly one of --h2 <file> or --memory");
        if (positional.size() > 2) usage("too many arguments");
        String host = positional.size() > 0 ? positional.get(0) : "127.0.0.1";
        int port = positional.size() > 1 ? Integer.parseInt(positional.get(1)) : 27017;

        final MongoBackend backend;
        final String what;
        if (memory) {
            backend = new MemoryBackend();
            what = "memory backend (data is lost on stop)";
        } else {
            File f = new File(h2File).getAbsoluteFile();
            File dir = f.getParentFile();
            if (dir != null && !dir.isDirectory() && !dir.mkdirs()) usage("cannot create directory " + dir);
            // Fails (and the process exits non-zero) if another process holds the file lock.
            backend = new H2Backend(f.getPath());
            what = "H2 backend, file " + f.getPath();
        }

        MongoServer server = new MongoServer(backend);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("mongo-java-server: shutting down");
            try {
                // Stops listening, closes client connections, then closes the backend.
                server.shutdownNow();
            } catch (RuntimeException e) {
                System.out.println("mongo-java-server: shutdownNow failed: " + e);
            }
            if (backend instanceof H2Backend) {
                H2Backend h2 = (H2Backend) backend;
                try {
                    // shutdownNow() normally closed it already; make sure the store is
                    // committed and closed even if that step failed.
                    if (!h2.getMvStore().isClosed()) {
                        h2.getMvStore().close();
                    }
                    System.out.println("mongo-java-server: H2 store closed");
                } catch (RuntimeException e) {
                    System.out.println("mongo-java-server: closing the H2 store failed: " + e);
                }
            }
            System.out.flush();
            stopped.countDown();
        }, "shutdown"));

        server.bind(host, port);
        System.out.println("mongo-java-server: listening on " + host + ":" + port + " (" + what + ")");
        System.out.flush();
        stopped.await();
    }
}
