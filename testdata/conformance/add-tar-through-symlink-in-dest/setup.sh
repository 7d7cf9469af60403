mkdir -p t/var/run && echo pid > t/var/run/app.pid && tar --owner=0 --group=0 --numeric-owner --mtime=@1 --sort=name -C t -cf context/v.tar var
