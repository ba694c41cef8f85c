{{/*
criguard.uninstallDaemonSet (dict "ctx" . "annotations" map): one pod per node
points kubelet back at containerd (restoring its original files), restarts
kubelet, then stops and removes criguard's unit and binary; Ready once nothing
of the install is left on its node. Rendered by uninstall.yaml
(uninstall.enabled) and, as a pre-delete hook, by uninstall-hook.yaml.
*/}}
{{- define "criguard.uninstallDaemonSet" -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "criguard.fullname" .ctx }}-uninstall
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "criguard.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: uninstall
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "criguard.selector" (dict "ctx" .ctx "component" "uninstall") | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "criguard.selector" (dict "ctx" .ctx "component" "uninstall") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "criguard.serviceAccountName" .ctx }}
      automountServiceAccountToken: false
      priorityClassName: {{ .ctx.Values.priorityClassName }}
      {{- with .ctx.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .ctx.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .ctx.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      hostPID: true
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      terminationGracePeriodSeconds: 5
      containers:
      - name: uninstall
        image: {{ include "criguard.image" (dict "ctx" .ctx "img" .ctx.Values.image) }}
        imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
        args:
        - node
        - uninstall
        - --host-root=/host
        - --hold
        {{- if .ctx.Values.uninstall.purge }}
        - --purge
        {{- end }}
        securityContext:
          privileged: true
        readinessProbe:
          exec:
            command: [{{ .ctx.Values.image.binary }}, node, status, --expect=uninstalled, --host-root=/host]
          initialDelaySeconds: 5
          periodSeconds: 5
          timeoutSeconds: 10
        resources:
          {{- toYaml .ctx.Values.uninstall.resources | nindent 10 }}
        volumeMounts:
        - name: host
          mountPath: /host
      volumes:
      - name: host
        hostPath:
          path: /
          type: Directory
{{- end -}}

{{/* criguard.hookAnnotations WEIGHT: a pre-delete hook, deleted once every hook succeeded. */}}
{{- define "criguard.hookAnnotations" -}}
helm.sh/hook: pre-delete
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}

{{/*
criguard.hookJob (dict "ctx" . "name" SA "weight" N "command" C "daemonset" D "timeout" SECONDS):
`criguard-sync C D` as a pre-delete hook Job. It runs as a normal pod on some
node: criguard's policy there must allow the criguard-sync image (as it must
for the installer's own sidecar).
*/}}
{{- define "criguard.hookJob" -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .name }}-{{ .command }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "criguard.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: uninstall-hook
  annotations:
    {{- include "criguard.hookAnnotations" .weight | nindent 4 }}
spec:
  backoffLimit: 1
  # The Job's own limit, a little above the command's --timeout.
  activeDeadlineSeconds: {{ add .timeout 30 }}
  template:
    metadata:
      labels:
        {{- include "criguard.selector" (dict "ctx" .ctx "component" "uninstall-hook") | nindent 8 }}
    spec:
      serviceAccountName: {{ .name }}
      restartPolicy: Never
      priorityClassName: {{ .ctx.Values.priorityClassName }}
      {{- with .ctx.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: {{ .command }}
        image: {{ include "criguard.image" (dict "ctx" .ctx "img" .ctx.Values.syncImage) }}
        imagePullPolicy: {{ .ctx.Values.syncImage.pullPolicy }}
        command: [{{ .ctx.Values.syncImage.binary }}]
        args:
        - {{ .command }}
        - --namespace={{ .ctx.Release.Namespace }}
        - --timeout={{ .timeout }}s
        - {{ .daemonset }}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
        resources:
          {{- toYaml .ctx.Values.uninstall.resources | nindent 10 }}
{{- end -}}
